package protocols

import (
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"
)

// CredentialPassword is the credential name of a login with the account
// password (an app password login names the app password).
const CredentialPassword = "password"

// LoginEvent is one login attempt the AuthGuard decided: accepted, or
// refused for bad credentials or a lockout. Logins the store could not
// check are not reported. It never carries a password.
type LoginEvent struct {
	Time     time.Time
	Protocol string
	// User is the canonical address the client named (for a refusal,
	// possibly no account at all).
	User string
	// Remote is the client's IP address (the zero Addr when unknown).
	Remote netip.Addr
	// Credential is CredentialPassword or the app password's name for an
	// accepted login, "" for a refused one (which credential a wrong
	// password was meant as cannot be told).
	Credential string
	Success    bool
}

// LoginRecorder is told of every login attempt the AuthGuard decides.
// RecordLogin is called on the login's path: it must be quick (queue any
// store write) and safe for concurrent use.
type LoginRecorder interface {
	RecordLogin(LoginEvent)
}

// CredentialNamer is an Account that can say which credential logged it
// in: "" for the account password, else the app password's name.
type CredentialNamer interface {
	Credential() string
}

// credentialOf names the credential an account logged in with.
func credentialOf(acct Account) string {
	if ga, ok := acct.(guardedAccount); ok {
		return ga.credential
	}
	if cn, ok := acct.(CredentialNamer); ok && cn.Credential() != "" {
		return cn.Credential()
	}
	return CredentialPassword
}

// SessionInfo describes one open authenticated session.
type SessionInfo struct {
	// ID is unique among the sessions of one registry.
	ID       uint64    `json:"id"`
	User     string    `json:"user"`
	Protocol string    `json:"protocol"`
	Remote   string    `json:"remote"`
	Since    time.Time `json:"since"`
	// Credential is CredentialPassword or the app password's name.
	Credential string `json:"credential"`
}

// SessionRegistry keeps the open authenticated sessions of a node (IMAP,
// POP3, SMTP submission) by user, each with a way to end it. It is safe
// for concurrent use; the zero value is not usable, use
// NewSessionRegistry.
type SessionRegistry struct {
	now func() time.Time

	mu     sync.Mutex
	next   uint64
	byUser map[string]map[uint64]*openSession
	// killed holds the recent kills by user (and by user and credential,
	// see killKey), so a session whose login was checked before a kill
	// but registered after it is ended too.
	killed map[string]time.Time
}

// killMemory is how long a kill is remembered for logins still in
// flight.
const killMemory = time.Minute

func killKey(user, credential string) string { return user + "\x00" + credential }

type openSession struct {
	info SessionInfo
	end  func()
}

// NewSessionRegistry returns an empty registry; now is the clock
// (time.Now when nil).
func NewSessionRegistry(now func() time.Time) *SessionRegistry {
	if now == nil {
		now = time.Now
	}
	return &SessionRegistry{now: now, byUser: map[string]map[uint64]*openSession{}, killed: map[string]time.Time{}}
}

// Open registers a session of user whose credentials were checked at
// checked (the zero time when unknown). end ends it (closes its
// connection); it is called at most once, without the registry's lock
// held, and may run concurrently with the session. A session checked
// before a kill of its user (or its credential) that came within
// killMemory is ended at once. The returned done unregisters the
// session and may be called more than once.
func (r *SessionRegistry) Open(user, protocol string, remote netip.Addr, credential string, checked time.Time, end func()) (done func()) {
	r.mu.Lock()
	if !checked.IsZero() {
		for _, k := range []string{killKey(user, ""), killKey(user, credential)} {
			if t, ok := r.killed[k]; ok && !checked.After(t) {
				r.mu.Unlock()
				end()
				return func() {}
			}
		}
	}
	r.next++
	id := r.next
	s := &openSession{info: SessionInfo{ID: id, User: user, Protocol: protocol, Since: r.now().UTC(), Credential: credential}, end: end}
	if remote.IsValid() {
		s.info.Remote = remote.String()
	}
	m := r.byUser[user]
	if m == nil {
		m = map[uint64]*openSession{}
		r.byUser[user] = m
	}
	m[id] = s
	r.mu.Unlock()
	return func() { r.remove(user, id) }
}

func (r *SessionRegistry) remove(user string, id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.byUser[user]
	delete(m, id)
	if len(m) == 0 {
		delete(r.byUser, user)
	}
}

// End ends the open sessions of user: all of them when credential is "",
// else only those logged in with that credential (an app password's
// name, or CredentialPassword). It returns how many it ended.
func (r *SessionRegistry) End(user, credential string) int {
	r.mu.Lock()
	now := r.now()
	for k, t := range r.killed {
		if now.Sub(t) > killMemory {
			delete(r.killed, k)
		}
	}
	r.killed[killKey(user, credential)] = now
	var ends []func()
	for id, s := range r.byUser[user] {
		if credential != "" && s.info.Credential != credential {
			continue
		}
		ends = append(ends, s.end)
		delete(r.byUser[user], id)
	}
	if len(r.byUser[user]) == 0 {
		delete(r.byUser, user)
	}
	r.mu.Unlock()
	for _, end := range ends {
		end()
	}
	return len(ends)
}

// EndDomain ends the open sessions of every user of domain (a
// canonical domain name) logged in with credential (every credential
// when it is ""), and returns how many it ended.
func (r *SessionRegistry) EndDomain(domain, credential string) int {
	suffix := "@" + domain
	r.mu.Lock()
	var users []string
	for user := range r.byUser {
		if strings.HasSuffix(user, suffix) {
			users = append(users, user)
		}
	}
	r.mu.Unlock()
	n := 0
	for _, user := range users {
		n += r.End(user, credential)
	}
	return n
}

// List returns the open sessions of user, oldest first.
func (r *SessionRegistry) List(user string) []SessionInfo {
	r.mu.Lock()
	out := make([]SessionInfo, 0, len(r.byUser[user]))
	for _, s := range r.byUser[user] {
		out = append(out, s.info)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Count returns how many sessions are open.
func (r *SessionRegistry) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.byUser {
		n += len(m)
	}
	return n
}

// guardedAccount is an Account as the guard's Login returns it when
// sessions are tracked: it remembers when and with which credential it
// was checked.
type guardedAccount struct {
	Account
	credential string
	checked    time.Time
}

// TrackSession registers an authenticated session in the guard's
// SessionRegistry (AuthGuardConfig.Sessions): acct is what the guard's
// Login returned, remote the client's address, and conn the connection
// closed to end the session. The returned done unregisters it (call it
// when the session ends or logs out; more than once is fine). Without a
// registry it does nothing.
func (g *AuthGuard) TrackSession(acct Account, protocol string, remote net.Addr, conn net.Conn) (done func()) {
	if g.cfg.Sessions == nil || acct == nil {
		return func() {}
	}
	var checked time.Time
	if ga, ok := acct.(guardedAccount); ok {
		checked = ga.checked
	}
	credential := credentialOf(acct)
	return g.cfg.Sessions.Open(acct.Address(), protocol, RemoteIP(remote), credential, checked, func() {
		_ = conn.Close() // the session's own read fails and it cleans up
	})
}

// recordLogin reports a decided login to the configured recorder.
func (g *AuthGuard) recordLogin(a Attempt, user string, acct Account, ok bool) {
	if g.cfg.Logins == nil || user == "" {
		return
	}
	e := LoginEvent{Time: g.now(), Protocol: a.Protocol, User: user, Remote: RemoteIP(a.Remote), Success: ok}
	if ok {
		e.User = acct.Address()
		e.Credential = credentialOf(acct)
	}
	g.cfg.Logins.RecordLogin(e)
}
