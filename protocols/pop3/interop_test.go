package pop3

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
)

// pythonClient drives the server with Python's standard poplib and prints
// what it saw as JSON. Message lines are latin-1 decoded so that any byte
// survives the trip.
const pythonClient = `
import json, poplib, ssl, sys
host, port, cafile, user, password = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = True
p = poplib.POP3(host, int(port), timeout=20)
out = {"welcome": p.getwelcome().decode()}
out["capa_before"] = sorted(p.capa().keys())
p.stls(ctx)
out["capa_after"] = sorted(p.capa().keys())
p.user(user)
p.pass_(password)
out["stat"] = list(p.stat())
resp, lines, _ = p.list()
out["list"] = [l.decode() for l in lines]
resp, lines, _ = p.uidl()
out["uidl"] = [l.decode() for l in lines]
out["uidl_2"] = p.uidl(2).decode()
resp, lines, octets = p.retr(2)
out["retr_2"] = [l.decode("latin-1") for l in lines]
resp, lines, octets = p.top(1, 1)
out["top_1_1"] = [l.decode("latin-1") for l in lines]
out["dele"] = p.dele(2).decode()
out["quit"] = p.quit().decode()
print(json.dumps(out))
`

func TestPythonPoplib(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	store := protocoltest.NewStore(t)
	store.AddUser(t, testUser, testPassword)
	appendMessages(t, store, testUser, testPassword, threeMessages)

	certPEM, keyPEM, err := protocols.SelfSignedCertificate([]string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	e := startServer(t, store, func(cfg *Config) {
		cfg.TLS = protocols.TLSConfig(cert)
		cfg.AllowInsecureAuth = false
	})
	_, port, _ := net.SplitHostPort(e.addr)
	snap := e.inbox(t)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-c", pythonClient, "localhost", port, caFile, testUser, testPassword)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("poplib: %v\n%s", err, stderr.String())
	}
	var got struct {
		Welcome    string   `json:"welcome"`
		CapaBefore []string `json:"capa_before"`
		CapaAfter  []string `json:"capa_after"`
		Stat       []int    `json:"stat"`
		List       []string `json:"list"`
		UIDL       []string `json:"uidl"`
		UIDL2      string   `json:"uidl_2"`
		Retr2      []string `json:"retr_2"`
		Top11      []string `json:"top_1_1"`
		Dele       string   `json:"dele"`
		Quit       string   `json:"quit"`
	}
	if err := json.Unmarshal(stdout, &got); err != nil {
		t.Fatalf("decode %q: %v", stdout, err)
	}

	var total int
	var list, uidl []string
	for i, m := range snap.Messages {
		total += int(m.Size)
		list = append(list, fmt.Sprintf("%d %d", i+1, m.Size))
		uidl = append(uidl, fmt.Sprintf("%d %d.%d", i+1, snap.Mailbox.UIDValidity, m.UID))
	}
	lines := func(s string) []string { return strings.Split(strings.TrimSuffix(s, "\r\n"), "\r\n") }
	checks := []struct {
		name      string
		got, want any
	}{
		{"welcome", got.Welcome, "+OK pop.example.org POP3 server ready"},
		{"capa before STLS", got.CapaBefore, []string{"AUTH-RESP-CODE", "PIPELINING", "RESP-CODES", "STLS", "TOP", "UIDL"}},
		{"capa after STLS", got.CapaAfter, []string{"AUTH-RESP-CODE", "PIPELINING", "RESP-CODES", "SASL", "TOP", "UIDL", "USER"}},
		{"stat", got.Stat, []int{3, total}},
		{"list", got.List, list},
		{"uidl", got.UIDL, uidl},
		{"uidl 2", got.UIDL2, "+OK " + uidl[1]},
		{"retr 2", got.Retr2, lines(threeMessages[1])},
		{"top 1 1", got.Top11, lines(message("first", "one"))},
		{"dele", got.Dele, "+OK message 2 deleted"},
		{"quit", got.Quit, "+OK pop.example.org POP3 server signing off (2 messages left)"},
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	// poplib's QUIT got +OK, so the deletion is committed.
	if got := strings.Join(subjects(t, e), ","); got != "first,third" {
		t.Errorf("INBOX after poplib session: %q", got)
	}
}
