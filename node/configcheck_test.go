package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckConfig: "config check" names the line of every problem —
// syntax, unknown keys and values the validator refuses — and passes the
// example config.
func TestCheckConfig(t *testing.T) {
	example, err := os.ReadFile(filepath.Join("..", "docs", "mailnode.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if problems := CheckConfig("example.toml", example); len(problems) != 0 {
		t.Errorf("the example config has problems: %q", problems)
	}
	bad := `hostname = "mail.example.com"
data_dir = "/var/lib/mailnode"

[limits]
max_connections_per_ip = 5
bogus_key = 3
max_message_size = 100

[filters]
on_failure = "drop"
`
	got := strings.Join(CheckConfig("bad.toml", []byte(bad)), "\n")
	for _, want := range []string{
		"bad.toml:6: unknown key limits.bogus_key",
		"bad.toml:7: limits.max_message_size 100",
		"bad.toml:10: filters.on_failure \"drop\"",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems:\n%s\nlack %q", got, want)
		}
	}
	// The parser names the line where it noticed the error: the one after
	// the unfinished table header.
	if got := CheckConfig("syntax.toml", []byte("hostname = \"x\"\n[limits\n")); len(got) != 1 || !strings.HasPrefix(got[0], "syntax.toml:3: ") {
		t.Errorf("syntax error: %q", got)
	}
	if got := CheckConfig("type.toml", []byte("[limits]\nmax_connections = \"many\"\n")); len(got) != 1 || !strings.HasPrefix(got[0], "type.toml:2: ") {
		t.Errorf("type error: %q", got)
	}
}

// TestCLIConfigCheck: the command prints each problem with its line and
// fails, or says ok.
func TestCLIConfigCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	if err := os.WriteFile(good, []byte("hostname = \"mail.example.com\"\ndata_dir = \"/var/lib/mailnode\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := mustCLI(t, "", "config", "check", "--config", good); !strings.Contains(out, "good.toml: ok") {
		t.Errorf("good config: %q", out)
	}
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("hostname = \"mail.example.com\"\n\n[listen]\nimap = \"nowhere\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, context.Background(), "", "config", "check", "--config", bad)
	if r.code != ExitError || !strings.Contains(r.stdout, "bad.toml:4: listen.imap") {
		t.Errorf("bad config: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	failCLI(t, ExitUsage, "subcommand", "", "config")
}
