package node

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/node/admin"
)

// accountUsage documents the app password and MFA commands.
const accountUsage = `
App passwords and MFA:
  mailnode user app-password add    --data DIR --name NAME [--scope imap,pop3,smtp] ADDRESS
  mailnode user app-password list   --data DIR [--json] ADDRESS
  mailnode user app-password revoke --data DIR ADDRESS NAME
  mailnode user mfa enable  --data DIR ADDRESS        (otpauth:// URI and recovery codes)
  mailnode user mfa confirm --data DIR ADDRESS CODE   (a code from the app switches MFA on)
  mailnode user mfa disable --data DIR [--recovery CODE] ADDRESS
  mailnode domain mfa --data DIR DOMAIN require|optional

"app-password add" prints the generated password alone on standard
output, once. Once a user has MFA on, or the user's domain requires it,
IMAP, POP3 and SMTP accept only the user's app passwords. A recovery code
given to "mfa disable" must be one of the user's unused ones.
`

// accountCommandName recognises the app password and MFA commands: it
// returns the command's full name ("user app-password add", "user mfa
// enable", "domain mfa") and its arguments, and ok false for any other
// command.
func accountCommandName(cmd string, rest []string) (name string, args []string, ok bool, err error) {
	switch {
	case cmd == "domain" && len(rest) > 0 && rest[0] == "mfa":
		return "domain mfa", rest[1:], true, nil
	case cmd == "user" && len(rest) > 0 && (rest[0] == "app-password" || rest[0] == "mfa"):
		if len(rest) < 2 || strings.HasPrefix(rest[1], "-") {
			return "", nil, true, fmt.Errorf("%w: user %s needs a subcommand", errUsage, rest[0])
		}
		return "user " + rest[0] + " " + rest[1], rest[2:], true, nil
	}
	return "", nil, false, nil
}

// accountCommand runs an app password or MFA command against the node
// serving a data directory. Secrets the node hands out (an app password,
// a TOTP key, recovery codes) are printed to standard output only.
func (c CLI) accountCommand(ctx context.Context, name string, args []string) error {
	fs := newFlagSet(name)
	data := fs.String("data", "", "data directory of the node")
	configFile := fs.String("config", "", "config file naming the data directory")
	var appName, scope, recovery *string
	var asJSON *bool
	want := 1
	switch name {
	case "user app-password add":
		appName = fs.String("name", "", "what the app password is for")
		scope = fs.String("scope", "", "protocols it logs in with (imap,pop3,smtp; default all)")
	case "user app-password list":
		asJSON = fs.Bool("json", false, "print as JSON")
	case "user app-password revoke", "user mfa confirm", "domain mfa":
		want = 2
	case "user mfa enable":
	case "user mfa disable":
		recovery = fs.String("recovery", "", "a recovery code of the user, checked before MFA goes")
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
	if len(pos) != want {
		return fmt.Errorf("%w: %s takes %d argument(s), got %d", errUsage, name, want, len(pos))
	}
	var scopes []string
	switch name {
	case "user app-password add":
		if *appName == "" {
			return fmt.Errorf("%w: %s needs --name NAME", errUsage, name)
		}
		if *scope != "" {
			scopes = strings.Split(*scope, ",")
		}
	case "domain mfa":
		if pos[1] != admin.MFARequire && pos[1] != admin.MFAOptional {
			return fmt.Errorf("%w: domain mfa takes %s or %s, got %q", errUsage, admin.MFARequire, admin.MFAOptional, pos[1])
		}
	}

	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	client := admin.NewClient(dir)
	defer client.Close()
	addr := pos[0]

	switch name {
	case "user app-password add":
		pw, err := client.AddAppPassword(ctx, addr, *appName, scopes)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.Stdout, pw)
		fmt.Fprintf(c.Stderr, "app password %q of %s created; it is shown only this once: use it instead of the account password in the mail client\n", *appName, addr)
	case "user app-password list":
		aps, err := client.AppPasswords(ctx, addr)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(c.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(aps)
		}
		return printAppPasswords(c, aps)
	case "user app-password revoke":
		if err := client.RevokeAppPassword(ctx, addr, pos[1]); err != nil {
			return err
		}
		fmt.Fprintf(c.Stdout, "app password %q of %s revoked\n", pos[1], addr)
	case "user mfa enable":
		enr, err := client.EnableMFA(ctx, addr)
		if err != nil {
			return err
		}
		printEnrollment(c, addr, enr)
	case "user mfa confirm":
		if err := client.ConfirmMFA(ctx, addr, pos[1]); err != nil {
			return err
		}
		fmt.Fprintf(c.Stdout, "MFA is on for %s: IMAP, POP3 and SMTP accept only its app passwords now\n", addr)
	case "user mfa disable":
		if err := client.DisableMFA(ctx, addr, *recovery); err != nil {
			return err
		}
		fmt.Fprintf(c.Stdout, "MFA is off for %s\n", addr)
	case "domain mfa":
		if err := client.SetDomainMFA(ctx, addr, pos[1]); err != nil {
			return err
		}
		if pos[1] == admin.MFARequire {
			fmt.Fprintf(c.Stdout, "MFA required for %s: its users log in over IMAP, POP3 and SMTP with app passwords only\n", addr)
		} else {
			fmt.Fprintf(c.Stdout, "MFA optional for %s\n", addr)
		}
	}
	return nil
}

// printAppPasswords prints app passwords as a table.
func printAppPasswords(c CLI, aps []directory.AppPassword) error {
	tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSCOPE\tCREATED\tLAST USED\tLAST IP")
	for _, ap := range aps {
		used, ip := "never", "-"
		if !ap.LastUsed.IsZero() {
			used = ap.LastUsed.Format(time.RFC3339)
		}
		if ap.LastIP != "" {
			ip = ap.LastIP
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ap.Name, strings.Join(ap.Scope, ","), ap.Created.Format(time.RFC3339), used, ip)
	}
	return tw.Flush()
}

// printEnrollment prints what an MFA enrolment hands out, once.
func printEnrollment(c CLI, addr string, enr directory.MFAEnrollment) {
	fmt.Fprintf(c.Stdout, "%s\n\nsecret: %s\n\nrecovery codes (each works once; keep them apart from the device):\n", enr.URI, enr.Secret)
	for _, code := range enr.RecoveryCodes {
		fmt.Fprintf(c.Stdout, "  %s\n", code)
	}
	fmt.Fprintf(c.Stdout, "\nMFA is pending until confirmed: mailnode user mfa confirm %s CODE\n", addr)
}
