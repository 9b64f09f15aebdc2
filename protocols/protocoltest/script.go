package protocoltest

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// scriptTimeout bounds a scripted session from the client's last byte to
// the server's close.
const scriptTimeout = 20 * time.Second

// Script connects to addr over TCP, sends script, closes its sending
// side and reads until the server closes the connection. It returns what
// the server sent and the read's error: nil after an orderly close, a
// reset when the server closed with input unread. The server may stop
// reading early, so a failed write is not an error. A session that has
// not ended scriptTimeout after the client's last byte fails t: servers
// must end a session whose client is gone.
func Script(t testing.TB, addr string, script []byte) ([]byte, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(scriptTimeout))
	type result struct {
		out []byte
		err error
	}
	read := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(conn)
		read <- result{b, err}
	}()
	conn.Write(script)
	conn.(*net.TCPConn).CloseWrite()
	r := <-read
	if ne, ok := r.err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("session did not end %s after the client's last byte: %.200q", scriptTimeout, r.out[max(0, len(r.out)-200):])
	}
	return r.out, r.err
}

// ResetInbox makes acct's INBOX hold exactly msgs again, in order, unless
// it holds as many messages already: fuzz targets restore their fixture
// after a session that expunged or added mail.
func ResetInbox(t testing.TB, acct protocols.Account, msgs []string) {
	t.Helper()
	ctx := context.Background()
	inbox, err := acct.Mailbox(ctx, schema.InboxName)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := acct.Snapshot(ctx, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Messages) == len(msgs) {
		return
	}
	var all []schema.ExpungeTarget
	for _, m := range snap.Messages {
		all = append(all, schema.ExpungeTarget{UID: m.UID})
	}
	if len(all) > 0 {
		if _, err := acct.Expunge(ctx, inbox.ID, all); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range msgs {
		if _, err := acct.Append(ctx, inbox.ID, []byte(m), nil, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
}

// RecoveredPanics returns the lines of text-handler logs that tell of a
// recovered panic: error lines that say "panic". Debug lines may quote a
// client, "panic" or not, so they do not count.
func RecoveredPanics(logs string) []string {
	var panics []string
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "level=ERROR") && strings.Contains(line, "panic") {
			panics = append(panics, line)
		}
	}
	return panics
}
