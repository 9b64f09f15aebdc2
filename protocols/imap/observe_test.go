package imap

import (
	"crypto/tls"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
)

// withObserver reports the server's commands, and the logins of its
// guard, to rec.
func withObserver(rec *protocoltest.Recorder) serverOption {
	return func(c *Config) {
		c.Observer = rec
		c.Guard = protocols.NewAuthGuard(protocols.AuthGuardConfig{
			MaxFailuresPerIP: 1000, MaxFailuresPerUser: 1000, Window: time.Minute, Lockout: time.Minute, Observer: rec,
		}, nil)
	}
}

// mustNo runs cmd and fails unless it answers NO.
func (rc *rawConn) mustNo(command string) {
	rc.t.Helper()
	if _, status := rc.cmd(command); !strings.HasPrefix(status, "NO") {
		rc.t.Fatalf("%s: %s, want NO", command, status)
	}
}

// TestObserver runs every command the library hands to the session, in
// the combinations where it makes several calls for one command (CLOSE,
// SELECT while selected, the poll after a command), and checks that each
// command is reported once under its name with its outcome, and each
// login once by its result.
func TestObserver(t *testing.T) {
	rec := protocoltest.NewRecorder()
	ts := newTestServer(t, withObserver(rec))
	deliverN(t, ts, 3)

	rc := dialRaw(t, ts.addr)
	rc.mustNo("LOGIN " + testUser + " wrong-password")
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("CREATE Work")
	rc.mustNo("CREATE Work")
	rc.mustOK("SELECT INBOX")
	rc.mustOK("SELECT Work") // closes INBOX first
	rc.mustOK("EXAMINE INBOX")
	rc.mustOK("NOOP")
	rc.mustOK("CHECK")
	rc.mustOK("CAPABILITY") // after login, the library polls: a NOOP
	rc.mustOK("FETCH 1 (FLAGS)")
	rc.mustOK("UID FETCH 1:* (UID)")
	rc.mustNo("STORE 1 +FLAGS (\\Seen)") // read-only
	rc.mustOK("SEARCH ALL")
	rc.mustOK("UID SEARCH ALL")
	rc.mustOK("SELECT INBOX")
	rc.mustOK("STORE 1 +FLAGS (\\Deleted)")
	rc.mustOK("UID STORE 2 +FLAGS (\\Seen)")
	rc.mustOK("COPY 1 Work")
	rc.mustOK("UID COPY 2 Work")
	rc.mustOK("MOVE 2 Work")
	rc.mustOK("EXPUNGE")
	rc.mustOK("UID MOVE 3 Work")
	rc.mustOK("UID EXPUNGE 1:*")
	rc.mustOK("CLOSE")
	rc.mustOK("APPEND Work {5+}\r\nhello")
	rc.mustOK("LIST \"\" *")
	rc.mustOK("LSUB \"\" *")
	rc.mustOK("STATUS Work (MESSAGES)")
	rc.mustOK("NAMESPACE")
	rc.mustOK("SUBSCRIBE Work")
	rc.mustOK("UNSUBSCRIBE Work")
	rc.mustOK("RENAME Work Projects")
	rc.mustOK("DELETE Projects")
	rc.mustOK("EXAMINE INBOX")
	rc.mustOK("UNSELECT")
	rc.send("I1 IDLE\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	rc.send("DONE\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "I1 OK") {
		t.Fatalf("IDLE: %q", l)
	}
	if _, status := rc.cmd("XYZZY"); !strings.HasPrefix(status, "BAD") {
		t.Fatalf("unknown command: %s", status)
	}
	rc.mustOK("UNAUTHENTICATE")
	rc.mustOK("ID NIL")
	rc.cmd("LOGOUT")

	protocoltest.WaitFor(t, protocoltest.WantCounts("commands", rec.Commands, map[string]int{
		"LOGIN error": 1, "LOGIN ok": 1, "CREATE ok": 1, "CREATE error": 1,
		"SELECT ok": 3, "EXAMINE ok": 2, "NOOP ok": 3,
		"FETCH ok": 1, "UID FETCH ok": 1, "STORE error": 1, "STORE ok": 1, "UID STORE ok": 1,
		"SEARCH ok": 1, "UID SEARCH ok": 1, "COPY ok": 1, "UID COPY ok": 1, "MOVE ok": 1, "UID MOVE ok": 1,
		"EXPUNGE ok": 1, "UID EXPUNGE ok": 1, "CLOSE ok": 1, "APPEND ok": 1,
		"LIST ok": 2, "STATUS ok": 1, "NAMESPACE ok": 1, "SUBSCRIBE ok": 1, "UNSUBSCRIBE ok": 1,
		"RENAME ok": 1, "DELETE ok": 1, "UNSELECT ok": 1, "IDLE ok": 1, "UNAUTHENTICATE ok": 1, "ID ok": 1,
	}, true))
	protocoltest.WaitFor(t, protocoltest.WantCounts("logins", rec.Logins, map[string]int{"imap/ok": 1, "imap/credentials": 1}, true))
	for name := range rec.Commands() {
		name = strings.TrimSuffix(strings.TrimSuffix(name, " ok"), " error")
		found := false
		for _, c := range Commands {
			found = found || c == name
		}
		if !found {
			t.Errorf("command %q reported, not in Commands", name)
		}
	}
}

// TestObserverStartTLSAndAuthenticate checks STARTTLS, reported once
// the next command shows its handshake complete or as failed when the
// client gives the handshake up, and AUTHENTICATE, reported when its
// exchange ends or as failed when the client abandons it.
func TestObserverStartTLSAndAuthenticate(t *testing.T) {
	rec := protocoltest.NewRecorder()
	ts := newTestServer(t, withObserver(rec))

	rc := dialRaw(t, ts.addr)
	rc.mustOK("STARTTLS")
	rc.handshake(ts.clientTLS)
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + testUser + "\x00" + testPassword))
	rc.mustOK("AUTHENTICATE PLAIN " + ir)
	rc.cmd("LOGOUT")

	rc = dialRaw(t, ts.addr)
	rc.send("A1 AUTHENTICATE PLAIN\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("AUTHENTICATE: %q", l)
	}
	rc.send("*\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "A1 ") || strings.HasPrefix(l, "A1 OK") {
		t.Fatalf("abandoned AUTHENTICATE: %q", l)
	}
	rc.cmd("LOGOUT")

	// The client does not trust the certificate and gives up.
	rc = dialRaw(t, ts.addr)
	rc.mustOK("STARTTLS")
	if err := tls.Client(rc.conn, &tls.Config{ServerName: "imap.test"}).Handshake(); err == nil {
		t.Fatal("handshake with an untrusted certificate succeeded")
	}
	rc.conn.Close()

	protocoltest.WaitFor(t, protocoltest.WantCounts("commands", rec.Commands, map[string]int{
		"STARTTLS ok": 1, "STARTTLS error": 1, "AUTHENTICATE ok": 1, "AUTHENTICATE error": 1,
	}, true))
	if d := rec.Duration("STARTTLS"); d <= 0 || d > time.Minute {
		t.Errorf("STARTTLS took %s in all", d)
	}
}
