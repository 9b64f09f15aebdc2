package node

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/node/admin"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// inboxCount returns how many messages a user's INBOX holds.
func inboxCount(t *testing.T, n *Node, addr, password string) uint32 {
	t.Helper()
	ctx := context.Background()
	acct, err := n.Store().Authenticate(ctx, schema.Credentials{Username: addr, Password: password})
	if err != nil {
		t.Fatalf("login %s: %v", addr, err)
	}
	defer acct.Close()
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	return inbox.Messages
}

// TestCLIAliasCommands drives alias add|del|list and domain catch-all
// through the admin socket, and mail through the MX port to what they
// set up: one copy per user however many recipients reach it.
func TestCLIAliasCommands(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	dir := cfg.DataDir
	ctx := context.Background()
	mustCLI(t, "", "domain", "add", "--data", dir, "example.test")
	mustCLI(t, "", "domain", "add", "--data", dir, "other.test")
	const alice, bob, pw = "alice@example.test", "bob@example.test", "a-password"
	for _, u := range []string{alice, bob} {
		if err := n.Directory().AddUser(ctx, u, pw); err != nil {
			t.Fatal(err)
		}
	}

	out := mustCLI(t, "", "alias", "add", "--data", dir, "Team@example.test", alice+","+bob)
	if out != "alias team@example.test delivers to alice@example.test, bob@example.test\n" {
		t.Errorf("alias add: %q", out)
	}
	// Targets as separate arguments, flags after them.
	mustCLI(t, "", "alias", "add", "sales@other.test", "team@example.test", alice, "--data", dir)
	out = mustCLI(t, "", "domain", "catch-all", "--data", dir, "example.test", alice)
	if !strings.Contains(out, "goes to alice@example.test") {
		t.Errorf("domain catch-all: %q", out)
	}
	out = mustCLI(t, "", "alias", "list", "--data", dir)
	for _, want := range []string{
		"ALIAS", "@example.test (catch-all)  alice@example.test\n",
		"team@example.test", "alice@example.test,bob@example.test\n",
		"sales@other.test", "team@example.test,alice@example.test\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("alias list lacks %q:\n%s", want, out)
		}
	}
	var list []directory.Alias
	if err := json.Unmarshal([]byte(mustCLI(t, "", "alias", "list", "--data", dir, "--domain", "other.test", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if want := []directory.Alias{{Address: "sales@other.test", Targets: []string{"team@example.test", alice}}}; !reflect.DeepEqual(list, want) {
		t.Errorf("alias list --json --domain other.test = %+v, want %+v", list, want)
	}

	// Refusals name their reason.
	failCLI(t, ExitError, "more than the 10 an alias may forward to", "",
		"alias", "add", "--data", dir, "fwd@example.test", "a@x.test,b@x.test,c@x.test,d@x.test,e@x.test,f@x.test,g@x.test,h@x.test,i@x.test,j@x.test,k@x.test")
	failCLI(t, ExitError, "an alias may not shadow it", "", "alias", "add", "--data", dir, alice, bob)
	failCLI(t, ExitError, "alias loop", "", "alias", "add", "--data", dir, "team@example.test", "sales@other.test")
	failCLI(t, ExitError, "neither a user nor an alias", "", "alias", "add", "--data", dir, "fwd@example.test", "nobody@example.test")
	failCLI(t, ExitError, "no such domain", "", "alias", "add", "--data", dir, "x@unknown.test", alice)
	failCLI(t, ExitError, "is an alias", "new-password\n", "user", "add", "--data", dir, "team@example.test")
	failCLI(t, ExitError, "to forward outside it, use an alias", "", "domain", "catch-all", "--data", dir, "other.test", "someone@elsewhere.test")
	failCLI(t, ExitError, "not a user", "", "domain", "catch-all", "--data", dir, "other.test", "team@example.test")
	failCLI(t, ExitError, "no such alias", "", "alias", "del", "--data", dir, "nobody@example.test")

	// Errors keep their identity across the socket.
	client := admin.NewClient(dir)
	defer client.Close()
	if err := client.DeleteAlias(ctx, "nobody@example.test", nil); !errors.Is(err, directory.ErrNoSuchAlias) {
		t.Errorf("unknown alias over the socket: %v, want ErrNoSuchAlias", err)
	}
	if _, err := client.AddAlias(ctx, "fwd@example.test", []string{"x@elsewhere.test"}); err != nil {
		t.Errorf("external target (a forwarding) over the socket: %v", err)
	}
	if err := client.SetCatchAll(ctx, "example.test", "x@elsewhere.test"); !errors.Is(err, schema.ErrInvalid) {
		t.Errorf("external catch-all over the socket: %v, want ErrInvalid", err)
	}
	if _, err := client.AddAlias(ctx, alice, []string{bob}); !errors.Is(err, schema.ErrUserExists) {
		t.Errorf("alias over a user over the socket: %v, want ErrUserExists", err)
	}

	// Mail over the MX port: the alias, a user it names, a plus-address
	// and an unknown local part (the catch-all) all reach alice once.
	send := func(rcpts ...string) error {
		c, err := gosmtp.DialStartTLS(n.Addr(ListenSMTP).String(), clientTLS(t, cfg))
		if err != nil {
			t.Fatalf("smtp dial: %v", err)
		}
		defer c.Close()
		msg := "From: carol@sender.test\r\nSubject: to the team\r\n\r\nHello.\r\n"
		return c.SendMail("carol@sender.test", rcpts, strings.NewReader(msg))
	}
	if err := send("team@example.test", alice, "alice+x@example.test", "nobody@example.test"); err != nil {
		t.Fatalf("send: %v", err)
	}
	if got := inboxCount(t, n, alice, pw); got != 1 {
		t.Errorf("alice has %d messages, want 1", got)
	}
	if got := inboxCount(t, n, bob, pw); got != 1 {
		t.Errorf("bob has %d messages, want 1", got)
	}
	if err := send("sales@other.test"); err != nil {
		t.Fatalf("send to an alias of an alias: %v", err)
	}
	if a, b := inboxCount(t, n, alice, pw), inboxCount(t, n, bob, pw); a != 2 || b != 2 {
		t.Errorf("after sales@: alice %d, bob %d messages; want 2 each", a, b)
	}

	out = mustCLI(t, "", "alias", "del", "--data", dir, "team@example.test", bob)
	if !strings.Contains(out, "bob@example.test removed from alias team@example.test") {
		t.Errorf("alias del TARGET: %q", out)
	}
	mustCLI(t, "", "alias", "del", "--data", dir, "sales@other.test")
	mustCLI(t, "", "domain", "catch-all", "--data", dir, "example.test", "off")
	out = mustCLI(t, "", "alias", "list", "--data", dir)
	if strings.Contains(out, "sales@") || strings.Contains(out, "catch-all") || !strings.Contains(out, "team@example.test  alice@example.test\n") {
		t.Errorf("alias list after deletions:\n%s", out)
	}
	var smtpErr *gosmtp.SMTPError
	if err := send("nobody@example.test"); !errors.As(err, &smtpErr) || smtpErr.Code != 550 {
		t.Errorf("unknown local part with the catch-all off: %v, want 550", err)
	}
	if err := send("sales@other.test"); !errors.As(err, &smtpErr) || smtpErr.Code != 550 {
		t.Errorf("deleted alias: %v, want 550", err)
	}
}

func TestCLIAliasUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"alias"}, "needs a subcommand"},
		{[]string{"alias", "rename", "--data", "/tmp/x"}, "unknown command"},
		{[]string{"alias", "add", "--data", "/tmp/x", "a@example.test"}, "ALIAS TARGET"},
		{[]string{"alias", "add", "--data", "/tmp/x", "a@example.test", ","}, "at least one target"},
		{[]string{"alias", "del", "--data", "/tmp/x"}, "ALIAS [TARGET"},
		{[]string{"alias", "list", "--data", "/tmp/x", "extra"}, "no arguments"},
		{[]string{"alias", "list", "--data", "/tmp/x", "--nope"}, "flag provided but not defined"},
		{[]string{"domain", "catch-all", "--data", "/tmp/x", "example.test"}, "DOMAIN TARGET|off"},
		{[]string{"alias", "add", "a@example.test", "b@example.test"}, "--data"},
	} {
		failCLI(t, ExitUsage, tt.want, "", tt.args...)
	}
}
