package protocoltest

import (
	"crypto/tls"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
)

// Recorder is an observer of everything the frontends report
// (protocols.ConnObserver, CommandObserver, DeliveryObserver and
// AuthObserver) that remembers it, for tests of what the node's metrics
// would count. It is safe for concurrent use.
type Recorder struct {
	mu         sync.Mutex
	opened     int
	closed     int
	read       int64
	written    int64
	tls        map[string]int
	commands   map[string]int
	durations  map[string]time.Duration
	deliveries map[string]int
	logins     map[string]int
}

var (
	_ protocols.ConnObserver     = (*Recorder)(nil)
	_ protocols.CommandObserver  = (*Recorder)(nil)
	_ protocols.DeliveryObserver = (*Recorder)(nil)
	_ protocols.AuthObserver     = (*Recorder)(nil)
)

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{
		tls:        map[string]int{},
		commands:   map[string]int{},
		durations:  map[string]time.Duration{},
		deliveries: map[string]int{},
		logins:     map[string]int{},
	}
}

// ConnOpened counts an accepted connection.
func (r *Recorder) ConnOpened() { r.mu.Lock(); r.opened++; r.mu.Unlock() }

// ConnClosed counts a closed connection.
func (r *Recorder) ConnClosed() { r.mu.Lock(); r.closed++; r.mu.Unlock() }

// BytesRead counts bytes received.
func (r *Recorder) BytesRead(n int) { r.mu.Lock(); r.read += int64(n); r.mu.Unlock() }

// BytesWritten counts bytes sent.
func (r *Recorder) BytesWritten(n int) { r.mu.Lock(); r.written += int64(n); r.mu.Unlock() }

// TLSEstablished counts a handshake under "VERSION CIPHER", named as
// crypto/tls names them.
func (r *Recorder) TLSEstablished(version, cipher uint16) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tls[tls.VersionName(version)+" "+tls.CipherSuiteName(cipher)]++
}

// Command counts a command under "NAME ok" or "NAME error" and adds up
// its durations under NAME.
func (r *Recorder) Command(name string, ok bool, d time.Duration) {
	key := name + " error"
	if ok {
		key = name + " ok"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.commands[key]++
	r.durations[name] += d
}

// Delivery counts a message transaction under "RESULT/CLASS".
func (r *Recorder) Delivery(result protocols.DeliveryResult, class protocols.ReplyClass) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deliveries[string(result)+"/"+string(class)]++
}

// LoginSucceeded counts a login under "PROTOCOL/ok".
func (r *Recorder) LoginSucceeded(protocol string) { r.login(protocol + "/ok") }

// LoginFailed counts a login under "PROTOCOL/credentials" or
// "PROTOCOL/locked".
func (r *Recorder) LoginFailed(protocol string, locked bool) {
	if locked {
		r.login(protocol + "/locked")
		return
	}
	r.login(protocol + "/credentials")
}

// LoginError counts a login under "PROTOCOL/error".
func (r *Recorder) LoginError(protocol string) { r.login(protocol + "/error") }

// LockoutStarted counts nothing: the guard's own tests cover lockouts.
func (r *Recorder) LockoutStarted(string, protocols.LockScope) {}

func (r *Recorder) login(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logins[key]++
}

// Conns returns how many connections were opened and closed.
func (r *Recorder) Conns() (opened, closed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opened, r.closed
}

// Bytes returns the bytes read and written.
func (r *Recorder) Bytes() (read, written int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.read, r.written
}

// TLS returns the handshakes counted, by "VERSION CIPHER".
func (r *Recorder) TLS() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.tls)
}

// Commands returns the commands counted, by "NAME ok" and "NAME error".
func (r *Recorder) Commands() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.commands)
}

// Duration returns the total time the commands called name took.
func (r *Recorder) Duration(name string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.durations[name]
}

// Deliveries returns the message transactions counted, by
// "RESULT/CLASS".
func (r *Recorder) Deliveries() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.deliveries)
}

// Logins returns the logins counted, by "PROTOCOL/RESULT".
func (r *Recorder) Logins() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.logins)
}

// Reset forgets everything recorded so far.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opened, r.closed, r.read, r.written = 0, 0, 0, 0
	clear(r.tls)
	clear(r.commands)
	clear(r.durations)
	clear(r.deliveries)
	clear(r.logins)
}

// WaitFor polls cond until it returns "" (met) or the deadline passes,
// then fails the test with cond's last description of what is missing.
// What a frontend reports after its reply (a connection's close, the
// end of a command the client already has the answer to) arrives a
// little later than the client sees the reply.
func WaitFor(t testing.TB, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WantCounts returns a WaitFor condition that got() has at least the
// counts of want, or exactly when exact is set (no other keys either).
func WantCounts(what string, got func() map[string]int, want map[string]int, exact bool) func() string {
	return func() string {
		g := got()
		for k, v := range want {
			if g[k] != v && (exact || g[k] < v) {
				return fmt.Sprintf("%s: %q = %d, want %d (all: %v)", what, k, g[k], v, g)
			}
		}
		if exact {
			for k, v := range g {
				if _, ok := want[k]; !ok && v != 0 {
					return fmt.Sprintf("%s: unexpected %q = %d (all: %v)", what, k, v, g)
				}
			}
		}
		return ""
	}
}
