package adminweb

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// Session limits.
const (
	// DefaultIdleTimeout ends a session after this long without a request.
	DefaultIdleTimeout = 30 * time.Minute
	// DefaultMaxAge ends a session this long after login, whatever its use.
	DefaultMaxAge = 12 * time.Hour
	// maxSessions bounds the sessions kept; the least recently used goes
	// first.
	maxSessions = 1000
	// CookieName is the session cookie. The __Host- prefix makes
	// browsers accept it only Secure, for this host, for path /.
	CookieName = "__Host-mailnode-admin"
)

// session is one logged-in browser.
type session struct {
	id        string
	tokenName string
	// token is kept to check at each request that it is not revoked.
	token    string
	csrf     string
	created  time.Time
	lastSeen time.Time
	// flash is a message for the next page shown (after a redirect).
	flash    string
	flashBad bool
}

// sessions is the set of open sessions of this node.
type sessions struct {
	mu     sync.Mutex
	byID   map[string]*session
	idle   time.Duration
	maxAge time.Duration
	now    func() time.Time
}

func newSessions(idle, maxAge time.Duration, now func() time.Time) *sessions {
	return &sessions{byID: map[string]*session{}, idle: idle, maxAge: maxAge, now: now}
}

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("adminweb: crypto/rand: " + err.Error()) // never fails on supported systems
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// open starts a session for the admin token named name.
func (s *sessions) open(name, token string) *session {
	now := s.now()
	sess := &session{id: randomString(32), tokenName: name, token: token, csrf: randomString(32), created: now, lastSeen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	if len(s.byID) >= maxSessions {
		var oldest *session
		for _, o := range s.byID {
			if oldest == nil || o.lastSeen.Before(oldest.lastSeen) {
				oldest = o
			}
		}
		delete(s.byID, oldest.id)
	}
	s.byID[sess.id] = sess
	return sess
}

// pruneLocked drops expired sessions.
func (s *sessions) pruneLocked(now time.Time) {
	for id, o := range s.byID {
		if s.expired(o, now) {
			delete(s.byID, id)
		}
	}
}

func (s *sessions) expired(o *session, now time.Time) bool {
	return now.Sub(o.lastSeen) > s.idle || now.Sub(o.created) > s.maxAge
}

// get returns the live session of r's cookie and marks it used; expired
// is true when the cookie named a session that has just expired.
func (s *sessions) get(r *http.Request) (sess *session, expired bool) {
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return nil, false
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.byID[c.Value]
	if o == nil {
		return nil, false
	}
	if s.expired(o, now) {
		delete(s.byID, o.id)
		return nil, true
	}
	o.lastSeen = now
	return o, false
}

// close ends a session.
func (s *sessions) close(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, id)
}

// takeFlash returns and clears the session's message.
func (s *sessions) takeFlash(o *session) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg, bad := o.flash, o.flashBad
	o.flash, o.flashBad = "", false
	return msg, bad
}

func (s *sessions) setFlash(o *session, msg string, bad bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o.flash, o.flashBad = msg, bad
}

// cookie returns the session cookie for sess, or the one that deletes it
// for nil.
func (s *sessions) cookie(sess *session) *http.Cookie {
	c := &http.Cookie{Name: CookieName, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode}
	if sess == nil {
		c.MaxAge = -1
		return c
	}
	c.Value = sess.id
	c.MaxAge = int(s.maxAge / time.Second)
	return c
}

// csrfOK reports whether a form's CSRF field is the session's token.
func csrfOK(sess *session, field string) bool {
	return field != "" && subtle.ConstantTimeCompare([]byte(sess.csrf), []byte(field)) == 1
}

// sameOrigin checks the headers browsers send with a form POST: an
// Origin, if present, must be this host over https, and a
// Sec-Fetch-Site, if present, same-origin. A client that sends neither
// (not a browser) is left to the CSRF token.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	if origin := r.Header.Get("Origin"); origin != "" && origin != "https://"+r.Host {
		return false
	}
	return true
}
