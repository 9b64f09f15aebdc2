package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestCLIAppPasswordsAndMFA drives the app password and MFA commands end
// to end through the admin socket of a running node, and checks their
// effect on logins through the node's store.
func TestCLIAppPasswordsAndMFA(t *testing.T) {
	cfg := testConfig(t)
	cfg.Hostname = "mx.example.test"
	n := startNode(t, cfg)
	dir := cfg.DataDir
	ctx := context.Background()
	const user, account = "alice@example.test", "alice-password"
	mustCLI(t, "", "domain", "add", "--data", dir, "example.test")
	mustCLI(t, account+"\n", "user", "add", "--data", dir, user)
	login := func(password, protocol string) error {
		acct, err := n.Store().Authenticate(ctx, schema.Credentials{
			Username: user, Password: password, Protocol: protocol, Remote: netip.MustParseAddr("198.51.100.4"),
		})
		if err == nil {
			acct.Close()
		}
		return err
	}

	// add: the password alone on standard output, once.
	r := runCLI(t, ctx, "", "user", "app-password", "add", "--data", dir, "--name", "phone", "--scope", "imap,smtp", user)
	if r.code != ExitOK || !strings.Contains(r.stderr, "shown only this once") {
		t.Fatalf("app-password add: exit %d, stderr %q", r.code, r.stderr)
	}
	pw := strings.TrimSuffix(r.stdout, "\n")
	if !regexp.MustCompile(`^[a-z2-9]{4}(-[a-z2-9]{4}){3}$`).MatchString(pw) {
		t.Fatalf("app-password add printed %q", r.stdout)
	}
	if err := login(pw, schema.ProtocolIMAP); err != nil {
		t.Fatalf("app password over IMAP: %v", err)
	}
	if err := login(pw, schema.ProtocolPOP3); !errors.Is(err, schema.ErrAuthFailed) {
		t.Errorf("IMAP and SMTP app password over POP3: %v", err)
	}
	failCLI(t, ExitUsage, "--name", "", "user", "app-password", "add", "--data", dir, user)
	failCLI(t, ExitError, "already has an app password", "", "user", "app-password", "add", "--data", dir, "--name", "PHONE", user)
	failCLI(t, ExitError, "not imap, pop3 or smtp", "", "user", "app-password", "add", "--data", dir, "--name", "x", "--scope", "web", user)
	failCLI(t, ExitError, "no such user", "", "user", "app-password", "list", "--data", dir, "bob@example.test")
	failCLI(t, ExitUsage, "needs a subcommand", "", "user", "app-password")
	failCLI(t, ExitUsage, "unknown command", "", "user", "mfa", "reset", "--data", dir, user)
	failCLI(t, ExitUsage, "takes 2 argument", "", "user", "app-password", "revoke", "--data", dir, user)

	// list: the login above shows up as the last use, soon.
	var aps []directory.AppPassword
	deadline := time.Now().Add(30 * time.Second)
	for {
		aps = nil
		if err := json.Unmarshal([]byte(mustCLI(t, "", "user", "app-password", "list", "--json", "--data", dir, user)), &aps); err != nil {
			t.Fatal(err)
		}
		if len(aps) == 1 && aps[0].LastIP != "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(aps) != 1 || aps[0].Name != "phone" || strings.Join(aps[0].Scope, ",") != "imap,smtp" ||
		aps[0].LastIP != "198.51.100.4" || aps[0].LastUsed.IsZero() || aps[0].Created.IsZero() {
		t.Fatalf("app-password list --json: %+v", aps)
	}
	if out := mustCLI(t, "", "user", "app-password", "list", "--data", dir, user); !strings.Contains(out, "NAME   SCOPE") ||
		!strings.Contains(out, "phone  imap,smtp") || !strings.Contains(out, "198.51.100.4") || strings.Contains(out, pw) {
		t.Errorf("app-password list:\n%s", out)
	}

	// MFA: enable prints the URI and the recovery codes; pending until
	// a code confirms it.
	out := mustCLI(t, "", "user", "mfa", "enable", "--data", dir, user)
	lines := strings.Split(out, "\n")
	uri, err := url.Parse(lines[0])
	if err != nil || uri.Scheme != "otpauth" || uri.Query().Get("issuer") != "mx.example.test" || !strings.HasSuffix(uri.Path, ":"+user) {
		t.Fatalf("mfa enable printed %q (%v)", out, err)
	}
	var recovery []string
	for _, l := range lines {
		if strings.HasPrefix(l, "  ") {
			recovery = append(recovery, strings.TrimSpace(l))
		}
	}
	if len(recovery) != directory.RecoveryCodes || !strings.Contains(out, "secret: "+uri.Query().Get("secret")) {
		t.Fatalf("mfa enable printed %d recovery codes:\n%s", len(recovery), out)
	}
	if show := mustCLI(t, "", "user", "show", "--data", dir, user); !strings.Contains(show, "mfa      pending") || !strings.Contains(show, "app passwords  1") {
		t.Errorf("user show while pending:\n%s", show)
	}
	if err := login(account, schema.ProtocolIMAP); err != nil {
		t.Fatalf("account password while MFA is pending: %v", err)
	}
	failCLI(t, ExitError, "does not match", "", "user", "mfa", "confirm", "--data", dir, user, otherCode(t, uri.Query().Get("secret")))
	code, err := totp.GenerateCode(uri.Query().Get("secret"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	mustCLI(t, "", "user", "mfa", "confirm", "--data", dir, user, code)
	var shown directory.UserInfo
	if err := json.Unmarshal([]byte(mustCLI(t, "", "user", "show", "--json", "--data", dir, user)), &shown); err != nil || shown.MFA != directory.MFAOn {
		t.Errorf("user show --json after confirm: %+v, %v", shown, err)
	}
	if err := login(account, schema.ProtocolIMAP); !errors.Is(err, schema.ErrAuthFailed) {
		t.Errorf("account password with MFA on: %v", err)
	}
	if err := login(pw, schema.ProtocolSMTP); err != nil {
		t.Errorf("app password with MFA on: %v", err)
	}
	failCLI(t, ExitError, "does not match", "", "user", "mfa", "disable", "--data", dir, "--recovery", "aaaaa-aaaaa", user)
	mustCLI(t, "", "user", "mfa", "disable", "--data", dir, "--recovery", recovery[0], user)
	if err := login(account, schema.ProtocolIMAP); err != nil {
		t.Errorf("account password after mfa disable: %v", err)
	}

	// A domain that requires MFA: app passwords only, without enrolment.
	failCLI(t, ExitUsage, "require or optional", "", "domain", "mfa", "--data", dir, "example.test", "sometimes")
	mustCLI(t, "", "domain", "mfa", "--data", dir, "example.test", "require")
	if out := mustCLI(t, "", "domain", "list", "--data", dir); !strings.Contains(out, "required") {
		t.Errorf("domain list does not say MFA is required:\n%s", out)
	}
	if show := mustCLI(t, "", "user", "show", "--data", dir, user); !strings.Contains(show, "mfa      off (required by the domain") {
		t.Errorf("user show in a domain that requires MFA:\n%s", show)
	}
	if err := login(account, schema.ProtocolPOP3); !errors.Is(err, schema.ErrAuthFailed) {
		t.Errorf("account password in a domain that requires MFA: %v", err)
	}
	if err := login(pw, schema.ProtocolIMAP); err != nil {
		t.Errorf("app password in a domain that requires MFA: %v", err)
	}
	mustCLI(t, "", "domain", "mfa", "--data", dir, "example.test", "optional")
	if err := login(account, schema.ProtocolPOP3); err != nil {
		t.Errorf("account password once MFA is optional: %v", err)
	}

	// revoke
	if out := mustCLI(t, "", "user", "app-password", "revoke", "--data", dir, user, "phone"); !strings.Contains(out, "revoked") {
		t.Errorf("app-password revoke printed %q", out)
	}
	if err := login(pw, schema.ProtocolIMAP); !errors.Is(err, schema.ErrAuthFailed) {
		t.Errorf("revoked app password: %v", err)
	}
	failCLI(t, ExitError, "no app password named", "", "user", "app-password", "revoke", "--data", dir, user, "phone")
	if out := mustCLI(t, "", "user", "app-password", "list", "--data", dir, user); strings.Contains(out, "phone") {
		t.Errorf("app-password list after revoke:\n%s", out)
	}
}

// otherCode returns a six-digit code that is not valid for secret now
// (nor a step either side).
func otherCode(t *testing.T, secret string) string {
	t.Helper()
	valid := map[string]bool{}
	for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
		c, err := totp.GenerateCode(secret, time.Now().Add(d))
		if err != nil {
			t.Fatal(err)
		}
		valid[c] = true
	}
	for _, c := range []string{"000000", "111111", "222222", "333333"} {
		if !valid[c] {
			return c
		}
	}
	t.Fatal("no invalid code found")
	return ""
}
