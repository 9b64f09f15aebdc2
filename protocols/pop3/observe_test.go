package pop3

import (
	"fmt"
	"net"
	"testing"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
)

// TestObserver drives every command of the dispatcher, in and out of its
// state, plus unknown and malformed ones, and checks what the observers
// hear: each command once under its name ("other" for the rest) with
// its outcome, each login once by its result, and the bytes of the
// connection.
func TestObserver(t *testing.T) {
	rec := protocoltest.NewRecorder()
	store := protocoltest.NewStore(t)
	store.AddUser(t, testUser, testPassword)
	appendMessages(t, store, testUser, testPassword, []string{message("one", "body"), message("two", "body")})
	e := startServer(t, store, func(c *Config) {
		c.Observer = rec
		c.Guard = protocols.NewAuthGuard(protocols.AuthGuardConfig{Observer: rec}, nil)
	})

	c := e.dial(t)
	c.multi("CAPA")
	c.cmdErr("STAT", "-ERR")
	c.cmdErr("XYZZY", "-ERR")
	c.cmdErr("\x01", "-ERR")
	c.cmdOK("USER " + testUser)
	c.cmdErr("PASS wrong password", "-ERR")
	c.cmdOK("USER " + testUser)
	c.cmdOK("PASS " + testPassword)
	c.cmdOK("STAT")
	c.multi("LIST")
	c.multi("UIDL")
	c.multi("TOP 1 0")
	c.multi("RETR 1")
	c.cmdOK("DELE 1")
	c.cmdOK("RSET")
	c.cmdOK("NOOP")
	c.cmdErr("STLS", "-ERR")
	c.cmdErr("AUTHORIZE", "-ERR")
	c.cmdOK("QUIT")
	c.expectClosed()

	t2 := e.dial(t)
	t2.cmdOK("STLS")
	t2.startTLS(e.clientTLS)
	t2.cmdOK("QUIT")

	want := map[string]int{
		"CAPA ok": 1, "STAT error": 1, "other error": 3, "USER ok": 2, "PASS error": 1, "PASS ok": 1,
		"STAT ok": 1, "LIST ok": 1, "UIDL ok": 1, "TOP ok": 1, "RETR ok": 1, "DELE ok": 1, "RSET ok": 1,
		"NOOP ok": 1, "STLS error": 1, "QUIT ok": 2, "STLS ok": 1,
	}
	protocoltest.WaitFor(t, protocoltest.WantCounts("commands", rec.Commands, want, true))
	protocoltest.WaitFor(t, protocoltest.WantCounts("logins", rec.Logins, map[string]int{"pop3/ok": 1, "pop3/credentials": 1}, true))
	if rec.Duration("RETR") <= 0 {
		t.Errorf("RETR took no time")
	}
}

// TestObserverBytes checks that the bytes of a POP3 session are counted
// by the TimeoutListener it is served behind, both ways.
func TestObserverBytes(t *testing.T) {
	rec := protocoltest.NewRecorder()
	e := newEnv(t, []string{message("one", "body")})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.srv.Serve(protocols.NewTimeoutListener(raw, protocols.TimeoutListenerConfig{Observer: rec}))
	e.addr = raw.Addr().String()

	c := e.login(t)
	c.multi("RETR 1")
	c.cmdOK("QUIT")
	c.expectClosed()
	protocoltest.WaitFor(t, func() string {
		read, written := rec.Bytes()
		opened, closed := rec.Conns()
		// What the client sent: the commands and the password.
		sent := int64(len("USER " + testUser + "\r\nPASS " + testPassword + "\r\nRETR 1\r\nQUIT\r\n"))
		if read != sent || written < int64(len(message("one", "body"))) || opened != 1 || closed != 1 {
			return fmt.Sprintf("read %d (want %d), written %d, opened %d, closed %d", read, sent, written, opened, closed)
		}
		return ""
	})
}
