package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// adminCommand is a parsed "mailnode CMD SUB [flags] ARGS..." that talks
// to the node serving a data directory through its admin socket.
type adminCommand struct {
	sub    string
	dir    string
	asJSON bool
	args   []string
}

// parseAdminCommand parses the subcommand of cmd, one of subs, and the
// flags every such command takes: --data, --config and --json.
func parseAdminCommand(cmd string, subs []string, args []string) (adminCommand, error) {
	if len(args) == 0 || !slices.Contains(subs, args[0]) {
		return adminCommand{}, fmt.Errorf("%w: %s needs %s", errUsage, cmd, orList(subs))
	}
	a := adminCommand{sub: args[0]}
	fs := newFlagSet(cmd + " " + a.sub)
	data := fs.String("data", "", "data directory of the node")
	config := fs.String("config", "", "config file")
	asJSON := fs.Bool("json", false, "JSON output")
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return a, err
	}
	if a.dir, err = dataDirArg(cmd, *data, *config); err != nil {
		return a, err
	}
	a.asJSON, a.args = *asJSON, pos
	return a, nil
}

// call sends a request (body: JSON, nil for none) to the node's admin
// socket and decodes its JSON answer, of at most limit bytes, into out.
func (a adminCommand) call(ctx context.Context, method, path string, body []byte, limit int64, out any) error {
	client := newBackupClient(a.dir)
	defer client.close()
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	resp, err := client.requestBody(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, limit)).Decode(out); err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	return nil
}

// orList writes "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}
