package node

import (
	"context"
	"fmt"

	"github.com/mailcluster/mailcluster/node/admin"
)

// sentCopyUsage documents the Sent copy command.
const sentCopyUsage = `
Sent copies:
  mailnode domain sent-copy --data DIR DOMAIN on|off

With "on", submission stores a copy of every message a user of DOMAIN
sends in their Sent mailbox (the \Sent special-use one, created when
missing), committed before the client's 250. Off by default: most mail
clients save their own copy.
`

// sentCopyCommand runs "domain sent-copy" against the node serving a
// data directory.
func (c CLI) sentCopyCommand(ctx context.Context, args []string) error {
	const name = "domain sent-copy"
	fs := newFlagSet(name)
	data := fs.String("data", "", "data directory of the node")
	configFile := fs.String("config", "", "config file naming the data directory")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || (pos[1] != "on" && pos[1] != "off") {
		return fmt.Errorf("%w: domain sent-copy takes DOMAIN on|off", errUsage)
	}
	dir, err := dataDirArg(name, *data, *configFile)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	client := admin.NewClient(dir)
	defer client.Close()
	on := pos[1] == "on"
	if err := client.SetDomainSentCopy(ctx, pos[0], on); err != nil {
		return err
	}
	if on {
		fmt.Fprintf(c.Stdout, "Sent copies on for %s: submission stores what its users send in their Sent mailbox\n", pos[0])
	} else {
		fmt.Fprintf(c.Stdout, "Sent copies off for %s\n", pos[0])
	}
	return nil
}
