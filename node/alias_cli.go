package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/node/admin"
)

// aliasUsage documents the alias and catch-all commands.
const aliasUsage = `
Aliases and catch-all:
  mailnode alias add  --data DIR ALIAS TARGET[,TARGET...]
  mailnode alias del  --data DIR ALIAS [TARGET[,TARGET...]]
  mailnode alias list --data DIR [--domain DOMAIN] [--json]
  mailnode domain catch-all --data DIR DOMAIN TARGET|off

An alias in a served domain delivers to users and other aliases of the
cluster's domains, one copy per user however many recipients reach it;
"alias add" on an existing alias adds targets, "alias del" with targets
removes only those. An alias may not have a user's address, nor a user
an alias's. Aliases naming aliases are followed 5 deep at most: a change
that makes a loop or a deeper chain is refused. A target in another
domain is a forwarding (at most 10 per alias): mail arriving on the MX
port is queued for it with the envelope sender rewritten by SRS
(SRS0=...@the alias's domain, or [forwarding] srs_domain), and bounces
to that address are relayed to the original sender. A domain's
catch-all user receives mail to local parts that are neither a user,
an alias nor a plus-address (user+tag@) of either; it cannot forward.
`

// aliasCommandName recognises the alias and catch-all commands: it
// returns the command's full name ("alias add", "domain catch-all") and
// its arguments, and ok false for any other command.
func aliasCommandName(cmd string, rest []string) (name string, args []string, ok bool) {
	switch {
	case cmd == "domain" && len(rest) > 0 && rest[0] == "catch-all":
		return "domain catch-all", rest[1:], true
	case cmd == "alias" && len(rest) > 0:
		return "alias " + rest[0], rest[1:], true
	}
	return "", nil, false
}

// splitTargets splits TARGET[,TARGET...] arguments into addresses.
func splitTargets(args []string) []string {
	var out []string
	for _, a := range args {
		for _, t := range strings.Split(a, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// aliasCommand runs an alias or catch-all command against the node
// serving a data directory.
func (c CLI) aliasCommand(ctx context.Context, name string, args []string) error {
	fs := newFlagSet(name)
	data := fs.String("data", "", "data directory of the node")
	configFile := fs.String("config", "", "config file naming the data directory")
	var domain *string
	var asJSON *bool
	switch name {
	case "alias add", "alias del", "domain catch-all":
	case "alias list":
		domain = fs.String("domain", "", "list only this domain's aliases")
		asJSON = fs.Bool("json", false, "print as JSON")
	default:
		return fmt.Errorf("%w: unknown command %q", errUsage, name)
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	dir, err := dataDirArg(name, *data, *configFile)
	if err != nil {
		return err
	}
	var targets []string
	switch name {
	case "alias add":
		if len(pos) < 2 {
			return fmt.Errorf("%w: alias add takes ALIAS TARGET[,TARGET...]", errUsage)
		}
		if targets = splitTargets(pos[1:]); len(targets) == 0 {
			return fmt.Errorf("%w: alias add needs at least one target", errUsage)
		}
	case "alias del":
		if len(pos) < 1 {
			return fmt.Errorf("%w: alias del takes ALIAS [TARGET[,TARGET...]]", errUsage)
		}
		targets = splitTargets(pos[1:])
	case "alias list":
		if len(pos) != 0 {
			return fmt.Errorf("%w: alias list takes no arguments, got %q", errUsage, pos[0])
		}
	case "domain catch-all":
		if len(pos) != 2 {
			return fmt.Errorf("%w: domain catch-all takes DOMAIN TARGET|off", errUsage)
		}
	}

	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	client := admin.NewClient(dir)
	defer client.Close()

	switch name {
	case "alias add":
		a, err := client.AddAlias(ctx, pos[0], targets)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.Stdout, "alias %s delivers to %s\n", a.Address, strings.Join(a.Targets, ", "))
	case "alias del":
		if err := client.DeleteAlias(ctx, pos[0], targets); err != nil {
			return err
		}
		if len(targets) == 0 {
			fmt.Fprintf(c.Stdout, "alias %s deleted\n", pos[0])
		} else {
			fmt.Fprintf(c.Stdout, "%s removed from alias %s (an alias left without targets is deleted)\n", strings.Join(targets, ", "), pos[0])
		}
	case "alias list":
		aliases, err := client.Aliases(ctx, *domain)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(c.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(aliases)
		}
		return printAliases(c.Stdout, aliases)
	case "domain catch-all":
		target := pos[1]
		if target == "off" {
			target = ""
		}
		if err := client.SetCatchAll(ctx, pos[0], target); err != nil {
			return err
		}
		if target == "" {
			fmt.Fprintf(c.Stdout, "catch-all of %s off: mail to unknown addresses there is refused\n", pos[0])
		} else {
			fmt.Fprintf(c.Stdout, "catch-all of %s: mail to unknown addresses there goes to %s\n", pos[0], target)
		}
	}
	return nil
}

// printAliases prints aliases as a table; a catch-all is "@domain".
func printAliases(w io.Writer, aliases []directory.Alias) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ALIAS\tTARGETS")
	for _, a := range aliases {
		addr := a.Address
		if a.CatchAll {
			addr += " (catch-all)"
		}
		fmt.Fprintf(tw, "%s\t%s\n", addr, strings.Join(a.Targets, ","))
	}
	return tw.Flush()
}
