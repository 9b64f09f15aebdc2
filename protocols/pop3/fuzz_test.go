package pop3

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// FuzzSession drives whole sessions over net.Pipe against a test store
// holding a fixed three-message maildrop. It checks that every session
// ends, that every output line ends with CRLF, and that messages are gone
// only after a QUIT was acknowledged. The maildrop is restored after a
// session that deleted something.
func FuzzSession(f *testing.F) {
	store := protocoltest.NewStore(f)
	store.AddUser(f, testUser, testPassword)
	serverTLS, _ := protocoltest.TLS(f)
	srv, err := NewServer(Config{
		Hostname:          "fuzz.example.org",
		TLS:               serverTLS,
		Guard:             protocols.NewAuthGuard(protocols.AuthGuardConfig{}, nil),
		AllowInsecureAuth: true,
		// Every script is written at once, so a short idle timeout only
		// ends sessions left waiting, such as an unfinished AUTH.
		IdleTimeout:      250 * time.Millisecond,
		WriteTimeout:     2 * time.Second,
		HandshakeTimeout: 100 * time.Millisecond,
		MaxBadCommands:   20,
	}, store.Store)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	acct := store.Login(f, testUser, testPassword)
	ctx := context.Background()
	inbox, err := acct.Mailbox(ctx, schema.InboxName)
	if err != nil {
		f.Fatal(err)
	}
	protocoltest.ResetInbox(f, acct, threeMessages)

	for _, seed := range []string{
		"STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 1\r\nDELE 3\r\nRSET\r\n",
		"DELE 1\r\nDELE 2\r\nLIST 1\r\nUIDL 2\r\n",
		"TOP 1 0\r\nTOP 1 999\r\nRETR 2\r\nLIST 4\r\nNOOP\r\nCAPA\r\n",
		"DELE 2\r\nSTAT",
	} {
		f.Add(true, []byte(seed))
	}
	for _, seed := range []string{
		"CAPA\r\nUSER " + testUser + "\r\nPASS wrong\r\nAUTH PLAIN " + plainIR("", testUser, testPassword) + "\r\nSTAT\r\n",
		"AUTH PLAIN\r\n" + plainIR("", testUser, testPassword) + "\r\nDELE 1\r\n",
		"AUTH PLAIN\r\n*\r\nAUTH\r\nAUTH X\r\n",
		"STLS\r\nUSER x\r\n",
		"\x00\xff\r\n" + strings.Repeat("A", 300) + "\r\nGET / HTTP/1.0\r\n",
		"QUIT\r\n",
	} {
		f.Add(false, []byte(seed))
	}

	f.Fuzz(func(t *testing.T, login bool, input []byte) {
		var script bytes.Buffer
		if login {
			script.WriteString("USER " + testUser + "\r\nPASS " + testPassword + "\r\n")
		}
		script.Write(input)
		script.WriteString("\r\nQUIT\r\n")

		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer server.Close()
			srv.serveConn(server)
		}()
		output := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(client)
			output <- b
		}()
		// The server may close before reading everything; a failed write
		// is expected then.
		client.SetWriteDeadline(time.Now().Add(10 * time.Second))
		client.Write(script.Bytes())
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Fatal("session did not end")
		}
		client.Close()
		out := <-output

		if !bytes.HasPrefix(out, []byte("+OK fuzz.example.org POP3 server ready\r\n")) {
			t.Fatalf("no greeting: %.80q", out)
		}
		// After STLS the server speaks TLS records, which are not lines.
		text := out
		if i := bytes.Index(out, []byte("+OK begin TLS negotiation\r\n")); i >= 0 {
			text = out[:i]
		}
		if len(text) > 0 && !bytes.HasSuffix(text, []byte("\r\n")) {
			t.Fatalf("output does not end with CRLF: %.80q", text[max(0, len(text)-80):])
		}
		for _, line := range bytes.Split(bytes.TrimSuffix(text, []byte("\r\n")), []byte("\r\n")) {
			if bytes.ContainsAny(line, "\r\n") {
				t.Fatalf("bare CR or LF in output line %.80q", line)
			}
		}

		snap, err := acct.Snapshot(ctx, inbox.ID)
		if err != nil {
			t.Fatal(err)
		}
		signedOff := bytes.Contains(text, []byte("+OK fuzz.example.org POP3 server signing off ("))
		if len(snap.Messages) != len(threeMessages) && !signedOff {
			t.Fatalf("%d messages left without an acknowledged QUIT", len(snap.Messages))
		}
		protocoltest.ResetInbox(t, acct, threeMessages)
	})
}
