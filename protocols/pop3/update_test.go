package pop3

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func subjects(t *testing.T, e *testEnv) []string {
	t.Helper()
	acct := e.store.Login(t, testUser, testPassword)
	snap := e.inbox(t)
	var out []string
	for _, m := range snap.Messages {
		h, err := acct.Header(context.Background(), m.Blob)
		if err != nil {
			t.Fatalf("header: %v", err)
		}
		for _, l := range strings.Split(string(h), "\r\n") {
			if s, ok := strings.CutPrefix(l, "Subject: "); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

func TestDeleQuitDeletes(t *testing.T) {
	e := newEnv(t, threeMessages)
	c := e.login(t)
	c.cmdOK("DELE 1")
	c.cmdOK("DELE 3")
	if got := c.cmd("QUIT"); got != "+OK pop.example.org POP3 server signing off (1 messages left)" {
		t.Fatalf("QUIT: %q", got)
	}
	c.expectClosed()
	// The +OK came after the commit: the store shows it at once.
	if got := strings.Join(subjects(t, e), ","); got != "second" {
		t.Fatalf("left in INBOX: %q, want second", got)
	}
	// And a new session sees the one message, renumbered.
	c = e.login(t)
	if got := c.cmd("STAT"); !strings.HasPrefix(got, "+OK 1 ") {
		t.Fatalf("STAT: %q", got)
	}
	if got := c.multi("TOP 1 0"); !strings.Contains(got, "Subject: second") {
		t.Fatalf("TOP 1 0: %q", got)
	}
}

// TestNothingDeletedWithoutQuit ends sessions that marked messages in
// every way but QUIT; the INBOX must keep every message.
func TestNothingDeletedWithoutQuit(t *testing.T) {
	e := newEnv(t, threeMessages, func(cfg *Config) { cfg.IdleTimeout = time.Second })
	want := "first,second,third"

	t.Run("connection dropped", func(t *testing.T) {
		c := e.login(t)
		c.cmdOK("DELE 1")
		c.cmdOK("DELE 2")
		c.conn.Close()
		// The lock is released when the server has noticed the drop and
		// ended the session, so a new login succeeding proves it ended.
		waitLogin(t, e)
		if got := strings.Join(subjects(t, e), ","); got != want {
			t.Fatalf("INBOX: %q, want %q", got, want)
		}
	})
	t.Run("idle timeout", func(t *testing.T) {
		c := e.login(t)
		c.cmdOK("DELE 3")
		if got := c.readLine(); got != "-ERR disconnected for inactivity" {
			t.Fatalf("idle: %q", got)
		}
		c.expectClosed()
		waitLogin(t, e)
		if got := strings.Join(subjects(t, e), ","); got != want {
			t.Fatalf("INBOX: %q, want %q", got, want)
		}
	})
	t.Run("server closed", func(t *testing.T) {
		c := e.login(t)
		c.cmdOK("DELE 1")
		if err := e.srv.Close(); err != nil {
			t.Fatal(err)
		}
		c.expectClosed()
		if got := strings.Join(subjects(t, e), ","); got != want {
			t.Fatalf("INBOX: %q, want %q", got, want)
		}
		if err := e.srv.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

// waitLogin polls until a USER/PASS login succeeds (the previous session
// released the maildrop lock), then quits.
func waitLogin(t *testing.T, e *testEnv) {
	t.Helper()
	c := e.dial(t)
	eventually(t, "maildrop lock release", func() bool {
		c.cmdOK("USER " + testUser)
		reply := c.cmd("PASS " + testPassword)
		if strings.HasPrefix(reply, "-ERR [IN-USE]") {
			return false
		}
		if !strings.HasPrefix(reply, "+OK") {
			t.Fatalf("login: %q", reply)
		}
		return true
	})
	c.cmdOK("QUIT")
	c.expectClosed()
}

// TestQuitExpungeFails checks that a failed commit is not acknowledged.
func TestQuitExpungeFails(t *testing.T) {
	e := newEnv(t, threeMessages)
	c := e.login(t)
	c.cmdOK("DELE 1")
	// With the store unavailable, the expunge cannot commit.
	e.store.SetUnavailable(true)
	c.cmdErr("QUIT", "-ERR [SYS/TEMP] some deleted messages not removed")
	c.expectClosed()
}

// TestSnapshotIsolation: message numbers refer to the login snapshot while
// mail arrives and IMAP expunges.
func TestSnapshotIsolation(t *testing.T) {
	e := newEnv(t, threeMessages)
	c := e.login(t)
	stat := c.cmd("STAT")

	// A delivery after login is not in this session's maildrop.
	err := e.store.Store.Deliver(context.Background(), schema.Delivery{
		From: "bob@example.net", Recipients: []string{testUser}, Message: []byte(message("fourth", "late")),
	})
	if err != nil {
		t.Fatalf("deliver: %v", err)
	}
	if got := c.cmd("STAT"); got != stat {
		t.Fatalf("STAT changed: %q, was %q", got, stat)
	}
	c.cmdErr("RETR 4", "-ERR no such message")

	// Another client (IMAP) expunges message 2 meanwhile.
	acct := e.store.Login(t, testUser, testPassword)
	snap := e.inbox(t)
	if _, err := acct.Expunge(context.Background(), snap.Mailbox.ID, []schema.ExpungeTarget{{UID: snap.Messages[1].UID}}); err != nil {
		t.Fatalf("expunge: %v", err)
	}
	c.cmdErr("RETR 2", "-ERR message is no longer available")
	if got := c.multi("RETR 3"); !strings.Contains(got, "Subject: third") {
		t.Fatalf("RETR 3: %q", got)
	}
	// Deleting it and another one at QUIT still succeeds.
	c.cmdOK("DELE 2")
	c.cmdOK("DELE 1")
	c.cmdOK("QUIT")
	c.expectClosed()
	if got := strings.Join(subjects(t, e), ","); got != "third,fourth" {
		t.Fatalf("INBOX: %q", got)
	}
}

// TestQuitAfterLockLost: a session whose maildrop lock another session
// took meanwhile (it ran out while the first one's node was cut off)
// deletes nothing at QUIT and says why; the other session's lock stays.
func TestQuitAfterLockLost(t *testing.T) {
	e := newEnv(t, threeMessages)
	c := e.login(t)
	c.cmdOK("DELE 1")
	if err := e.store.Mem.TakeMaildropLock(testUser); err != nil {
		t.Fatal(err)
	}
	c.cmdErr("QUIT", "-ERR [IN-USE] maildrop lock lost to another session")
	c.expectClosed()
	if got := strings.Join(subjects(t, e), ","); got != "first,second,third" {
		t.Fatalf("left in INBOX: %q, want all three", got)
	}
	c = e.dial(t)
	c.cmdErr("AUTH PLAIN "+plainIR("", testUser, testPassword), "-ERR [IN-USE]")
}
