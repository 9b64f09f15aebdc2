package adminweb

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// Identity is who a request to the admin API is made as: it goes to the
// audit log.
type Identity struct {
	// Who names the operator, such as "token ops (web)".
	Who string
	// Remote is the browser's address.
	Remote string
}

// APIError is a refusal of the admin API, with the message the API gave.
type APIError struct {
	Status  int
	Message string
}

// Error returns the API's message.
func (e *APIError) Error() string { return e.Message }

// Caller calls the admin API in-process. path is the API path
// ("/v1/users"); in, when not nil, is sent as the JSON body; out, when
// not nil, receives the JSON answer. A refusal is an *APIError.
type Caller interface {
	Call(ctx context.Context, who Identity, method, path string, in, out any) error
}

// RateSample is a reading of the node's cumulative counters, taken at
// regular intervals; the charts show the rates between samples.
type RateSample struct {
	Time time.Time
	// Messages counts the messages accepted over SMTP (MX and
	// submission).
	Messages float64
	// Logins and LoginFailures count the accepted and refused logins of
	// the mail protocols.
	Logins        float64
	LoginFailures float64
}

// Config is what the page is served with.
type Config struct {
	// API serves every read and change.
	API Caller
	// Login checks an admin token typed on the login page and returns
	// its name; a wrong token is an error that the page shows as such
	// (the caller counts it against the client address).
	Login func(ctx context.Context, remote net.Addr, token string) (string, error)
	// Valid reports whether the admin token named name is still token;
	// a session whose token was revoked ends.
	Valid func(name, token string) bool
	// Rates returns the recent samples, oldest first (nil for none).
	Rates func() []RateSample
	// IdleTimeout and MaxAge bound a session (0: DefaultIdleTimeout,
	// DefaultMaxAge).
	IdleTimeout, MaxAge time.Duration
	// Now is the clock (nil: time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// ErrBadToken is what Config.Login returns for a token that is none.
var ErrBadToken = errors.New("not a valid admin token")

// Server is the web admin page: an http.Handler for the paths under
// Prefix.
type Server struct {
	cfg      Config
	log      *slog.Logger
	sessions *sessions
	pages    map[string]*template.Template
	mux      *http.ServeMux
	static   http.Handler
}

// Prefix is where the page is served.
const Prefix = "/admin/"

// maxFormBytes bounds a posted form.
const maxFormBytes = 16 << 10

// New returns the page served with cfg.
func New(cfg Config) (*Server, error) {
	if cfg.API == nil || cfg.Login == nil || cfg.Valid == nil {
		return nil, errors.New("adminweb: API, Login and Valid are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.Rates == nil {
		cfg.Rates = func() []RateSample { return nil }
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log.With("component", "adminweb"), sessions: newSessions(cfg.IdleTimeout, cfg.MaxAge, cfg.Now),
		pages: map[string]*template.Template{}}
	funcs := template.FuncMap{"since": s.since, "bytes": humanBytes, "seconds": humanSeconds, "when": when, "quota": quotaText}
	for _, page := range []string{"login", "status", "domains", "users", "mfa"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "assets/layout.html", "assets/"+page+".html")
		if err != nil {
			return nil, err
		}
		s.pages[page] = t
	}
	static, err := fs.Sub(assets, "assets/static")
	if err != nil {
		return nil, err
	}
	s.static = http.StripPrefix(Prefix+"static/", http.FileServerFS(static))
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+Prefix+"{$}", s.session(s.statusPage))
	mux.HandleFunc("GET "+Prefix+"domains", s.session(s.domainsPage))
	mux.HandleFunc("POST "+Prefix+"domains", s.form(s.addDomain))
	mux.HandleFunc("GET "+Prefix+"users", s.session(s.usersPage))
	mux.HandleFunc("POST "+Prefix+"users", s.form(s.addUser))
	mux.HandleFunc("POST "+Prefix+"users/mfa", s.form(s.enrolMFA))
	mux.HandleFunc("POST "+Prefix+"users/mfa/confirm", s.form(s.confirmMFA))
	mux.HandleFunc("GET "+Prefix+"login", s.loginPage)
	mux.HandleFunc("POST "+Prefix+"login", s.login)
	mux.HandleFunc("POST "+Prefix+"logout", s.form(s.logout))
	mux.Handle("GET "+Prefix+"static/", s.static)
	s.mux = mux
	return s, nil
}

// ServeHTTP serves the page with the security headers of Secure.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	Secure(s.mux).ServeHTTP(w, r)
}

// handlerFunc is a page handler of a logged-in session.
type handlerFunc func(w http.ResponseWriter, r *http.Request, sess *session)

// session runs h for a request with a live session, and sends others to
// the login page.
func (s *Server) session(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, expired := s.sessions.get(r)
		if sess != nil && !s.cfg.Valid(sess.tokenName, sess.token) {
			s.sessions.close(sess.id)
			sess, expired = nil, true
		}
		if sess == nil {
			http.SetCookie(w, s.sessions.cookie(nil))
			to := Prefix + "login"
			if expired {
				to += "?expired=1"
			}
			http.Redirect(w, r, to, http.StatusSeeOther)
			return
		}
		h(w, r, sess)
	}
}

// form is session for a POST: it also checks the origin headers and the
// CSRF token, and parses the bounded form.
func (s *Server) form(h handlerFunc) http.HandlerFunc {
	return s.session(func(w http.ResponseWriter, r *http.Request, sess *session) {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		if !sameOrigin(r) || !csrfOK(sess, r.PostForm.Get("csrf")) {
			s.log.Warn("admin page form refused: cross-site or without the session's CSRF token", "route", r.Pattern)
			http.Error(w, "refused: the form did not come from this page (CSRF check)", http.StatusForbidden)
			return
		}
		h(w, r, sess)
	})
}

// who is the identity a session's API calls are made as.
func who(r *http.Request, sess *session) Identity {
	return Identity{Who: "token " + sess.tokenName + " (web)", Remote: remoteIP(r)}
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// view is what every page template gets.
type view struct {
	Title    string
	Page     string
	CSRF     string
	Token    string
	Flash    string
	FlashBad bool
	Data     any
}

func (s *Server) render(w http.ResponseWriter, page string, status int, v view) {
	v.Page = page
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	var buf strings.Builder
	if err := s.pages[page].Execute(&buf, v); err != nil {
		s.log.Error("render admin page", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(buf.String()))
}

func (s *Server) sessionView(sess *session, title string) view {
	msg, bad := s.sessions.takeFlash(sess)
	return view{Title: title, CSRF: sess.csrf, Token: sess.tokenName, Flash: msg, FlashBad: bad}
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	v := view{Title: "Log in"}
	if r.URL.Query().Get("expired") != "" {
		v.Flash, v.FlashBad = "Your session ended. Log in again.", true
	}
	s.render(w, "login", http.StatusOK, v)
}

// login opens a session for a valid admin token. There is no session
// yet, so no CSRF token: the origin headers are checked, and the
// SameSite=Strict cookie cannot be used by another site anyway.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	if !sameOrigin(r) {
		http.Error(w, "refused: the form did not come from this page", http.StatusForbidden)
		return
	}
	token := strings.TrimSpace(r.PostForm.Get("token"))
	remote, _ := net.ResolveTCPAddr("tcp", r.RemoteAddr)
	var addr net.Addr
	if remote != nil {
		addr = remote
	}
	name, err := s.cfg.Login(r.Context(), addr, token)
	if err != nil {
		if !errors.Is(err, ErrBadToken) {
			s.log.Error("admin page login", "err", err)
		}
		s.log.Info("admin page login refused", "remote", remoteIP(r))
		s.render(w, "login", http.StatusUnauthorized, view{Title: "Log in", Flash: "That is not a valid admin token.", FlashBad: true})
		return
	}
	sess := s.sessions.open(name, token)
	s.log.Info("admin page login", "token_name", name, "remote", remoteIP(r))
	http.SetCookie(w, s.sessions.cookie(sess))
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	s.sessions.close(sess.id)
	http.SetCookie(w, s.sessions.cookie(nil))
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// redirect sends the browser back to a page with a message (post,
// redirect, get: a reload does not post again).
func (s *Server) redirect(w http.ResponseWriter, r *http.Request, sess *session, to, msg string, bad bool) {
	s.sessions.setFlash(sess, msg, bad)
	http.Redirect(w, r, to, http.StatusSeeOther)
}

func pathWithQuery(path string, q url.Values) string {
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}
