package pop3

import (
	"strings"
	"testing"
)

// A panic while a command runs closes that connection, releases its
// maildrop lock and leaves the process and the other sessions running.
func TestPanicClosesOnlyItsConnection(t *testing.T) {
	testHookHandle = func(line []byte) {
		if string(line) == "BOOM" {
			var m map[string]int
			m["x"]++ // a nil map: a runtime panic, as a bug would give
		}
	}
	t.Cleanup(func() { testHookHandle = nil })
	e := newEnv(t, []string{"Subject: one\r\n\r\nbody\r\n"})
	c := e.login(t)
	c.send("BOOM")
	if line, err := c.tp.ReadLine(); err == nil {
		t.Fatalf("after the panic: %q; want the connection closed", line)
	}
	// The maildrop lock went with the session: a new one logs in.
	fresh := e.login(t)
	if got := fresh.cmdOK("STAT"); !strings.HasPrefix(got, "+OK 1 ") {
		t.Fatalf("STAT after the panic: %q", got)
	}
}
