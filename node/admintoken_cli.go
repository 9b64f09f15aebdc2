package node

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/node/admin"
)

const adminTokenUsage = `
Admin API tokens (for https://HOST:PORT/api/ and the web page /admin/):
  mailnode admin token add    NAME          prints a new token, once (keep it: only its hash is stored)
  mailnode admin token list   [--json]      names and creation times
  mailnode admin token revoke NAME          requests with it fail from then on, on every node
    (all take --data DIR or --config FILE; tokens are managed here only, never over the API)
`

// adminTokenCommand is "mailnode admin token add|list|revoke".
func (c CLI) adminTokenCommand(ctx context.Context, args []string) error {
	if len(args) < 2 || args[0] != "token" || (args[1] != "add" && args[1] != "list" && args[1] != "revoke") {
		return fmt.Errorf("%w: admin token add|list|revoke", errUsage)
	}
	sub := args[1]
	fs := newFlagSet("admin token " + sub)
	data := fs.String("data", "", "data directory of the node")
	config := fs.String("config", "", "config file")
	asJSON := fs.Bool("json", false, "JSON output")
	pos, err := parseInterleaved(fs, args[2:])
	if err != nil {
		return err
	}
	if (sub == "list") != (len(pos) == 0) || len(pos) > 1 {
		return fmt.Errorf("%w: admin token add NAME | list | revoke NAME", errUsage)
	}
	dir, err := dataDirArg("admin token", *data, *config)
	if err != nil {
		return err
	}
	client := admin.NewClient(dir)
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	switch sub {
	case "add":
		tok, err := client.AddAdminToken(ctx, pos[0])
		if err != nil {
			return err
		}
		fmt.Fprintln(c.Stdout, tok)
		return nil
	case "revoke":
		if err := client.RevokeAdminToken(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(c.Stdout, "admin token %s revoked\n", pos[0])
		return nil
	}
	toks, err := client.AdminTokens(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		if toks == nil {
			toks = []directory.AdminToken{}
		}
		return writeJSON(c.Stdout, toks)
	}
	if len(toks) == 0 {
		fmt.Fprintln(c.Stdout, "no admin tokens (create one with: mailnode admin token add NAME)")
		return nil
	}
	tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCREATED")
	for _, t := range toks {
		fmt.Fprintf(tw, "%s\t%s\n", t.Name, t.Created.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}
