package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestIMAPUTF8WithImaplib: Python's imaplib, in its UTF-8 mode (ENABLE
// UTF8=ACCEPT, RFC 6855), creates, lists, selects and asks the STATUS of
// mailboxes named in UTF-8 with "&" in them, which it sends raw; a
// second session that did not enable UTF-8 lists them in modified UTF-7.
func TestIMAPUTF8WithImaplib(t *testing.T) {
	t.Parallel()
	py := python3(t)
	n := sharedNode(t)
	user, pass := n.newUser(t, "imap-utf8")
	host, port, err := net.SplitHostPort(n.addr("imaps"))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"Grüße & Co", "R&D", "日本語"}
	prog, err := json.Marshal(map[string]any{
		"ip": host, "port": port, "servername": n.hostname, "cafile": n.data + "/tls/cert.pem",
		"user": user, "password": pass, "names": names,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "testdata/imaputf8.py")
	cmd.Stdin = bytes.NewReader(prog)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("imaputf8.py: %v\n%s", err, stderr.String())
	}
	var out struct {
		Capabilities []string          `json:"capabilities"`
		Enabled      string            `json:"enabled"`
		List         []string          `json:"list"`
		Selects      map[string]int    `json:"selects"`
		Status       map[string]string `json:"status"`
		PlainList    []string          `json:"plain_list"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("imaputf8.py output: %v: %s", err, stdout.String())
	}
	// imaplib reads the capabilities once, before login: ENABLE must be
	// there for its enable() to try.
	if !slices.Contains(out.Capabilities, "ENABLE") || slices.Contains(out.Capabilities, "LITERAL-") {
		t.Errorf("capabilities: %q", out.Capabilities)
	}
	if out.Enabled != "OK UTF8=ACCEPT" {
		t.Errorf("ENABLE: %q", out.Enabled)
	}
	listed := func(lines []string, name string) bool {
		return slices.ContainsFunc(lines, func(l string) bool { return strings.HasSuffix(l, ` "`+name+`"`) })
	}
	for _, name := range names {
		if !listed(out.List, name) {
			t.Errorf("LIST in UTF-8 lacks %q: %q", name, out.List)
		}
		if exists, ok := out.Selects[name]; !ok || exists != 0 {
			t.Errorf("SELECT %q: %d %v", name, exists, ok)
		}
		if st := out.Status[name]; !strings.HasPrefix(st, `"`+name+`" (`) {
			t.Errorf("STATUS %q: %q", name, st)
		}
	}
	for _, enc := range []string{"Gr&APwA3w-e &- Co", "R&-D", "&ZeVnLIqe-"} {
		if !listed(out.PlainList, enc) {
			t.Errorf("LIST in modified UTF-7 lacks %q: %q", enc, out.PlainList)
		}
	}
}
