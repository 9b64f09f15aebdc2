package autoconfig

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// URL paths the Handler serves. The HTTP methods are in Register.
const (
	// PathAutoconfig is Thunderbird's request to autoconfig.DOMAIN.
	PathAutoconfig = "/mail/config-v1.1.xml"
	// PathWellKnownAutoconfig is Thunderbird's request to DOMAIN itself.
	PathWellKnownAutoconfig = "/.well-known/autoconfig/mail/config-v1.1.xml"
	// PathAutodiscover and PathAutodiscoverUpper are Outlook's POX
	// autodiscover request, in the two spellings clients use.
	PathAutodiscover      = "/autodiscover/autodiscover.xml"
	PathAutodiscoverUpper = "/Autodiscover/Autodiscover.xml"
	// PathMobileconfig is the Apple configuration profile download.
	PathMobileconfig = "/apple/mobileconfig"
)

// Paths returns every URL path the Handler serves, for a reverse proxy
// that forwards only these.
func Paths() []string {
	return []string{PathAutoconfig, PathWellKnownAutoconfig, PathAutodiscover, PathAutodiscoverUpper, PathMobileconfig}
}

// QueryAddress is the query parameter naming the address of the
// Thunderbird and Apple requests.
const QueryAddress = "emailaddress"

// MaxRequestBytes bounds an autodiscover request body; real ones are a
// few hundred bytes.
const MaxRequestBytes = 64 << 10

// lookupTimeout bounds the domain lookup of one request.
const lookupTimeout = 5 * time.Second

// Domains tells which domains the cluster serves.
type Domains interface {
	// HostsDomain reports whether a (canonical) domain is served. An
	// error wrapping schema.ErrUnavailable means the answer is not known
	// now.
	HostsDomain(ctx context.Context, domain string) (bool, error)
}

// Handler serves the client configuration documents.
type Handler struct {
	cfg     Config
	domains Domains
	log     *slog.Logger
}

// New returns a handler advertising cfg. With domains nil it answers for
// any valid address; otherwise an address whose domain is not served
// gets 404.
func New(cfg Config, domains Domains) (*Handler, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{cfg: cfg, domains: domains, log: log}, nil
}

// Register adds the handler's routes to mux: GET (and HEAD) of the
// Thunderbird and Apple paths, POST of the autodiscover paths.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathAutoconfig, h.serveAutoconfig)
	mux.HandleFunc("GET "+PathWellKnownAutoconfig, h.serveAutoconfig)
	mux.HandleFunc("POST "+PathAutodiscover, h.serveAutodiscover)
	mux.HandleFunc("POST "+PathAutodiscoverUpper, h.serveAutodiscover)
	mux.HandleFunc("GET "+PathMobileconfig, h.serveMobileconfig)
}

// queryAddress returns the emailaddress parameter of a GET request, or
// answers 400 and returns "".
func queryAddress(w http.ResponseWriter, r *http.Request) string {
	vals := r.URL.Query()[QueryAddress]
	switch len(vals) {
	case 0:
		httpError(w, http.StatusBadRequest, "missing "+QueryAddress+" parameter")
		return ""
	case 1:
		if vals[0] == "" {
			httpError(w, http.StatusBadRequest, "empty "+QueryAddress+" parameter")
			return ""
		}
		return vals[0]
	}
	httpError(w, http.StatusBadRequest, "more than one "+QueryAddress+" parameter")
	return ""
}

// account validates an address and checks that its domain is served.
// It answers the request and returns ok false when it is not; only the
// domain is looked up, never the user.
func (h *Handler) account(w http.ResponseWriter, r *http.Request, doc, raw string) (addr, domain string, ok bool) {
	addr, domain, err := schema.CanonicalAddress(raw)
	if err != nil {
		h.log.Debug("autoconfig request refused", "document", doc, "reason", "invalid address")
		httpError(w, http.StatusBadRequest, "invalid email address")
		return "", "", false
	}
	if h.domains != nil {
		ctx, cancel := context.WithTimeout(r.Context(), lookupTimeout)
		defer cancel()
		hosted, err := h.domains.HostsDomain(ctx, domain)
		switch {
		case err != nil && r.Context().Err() != nil:
			return "", "", false // the client is gone
		case errors.Is(err, schema.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded):
			h.log.Warn("autoconfig: domain lookup unavailable", "document", doc, "err", err)
			httpError(w, http.StatusServiceUnavailable, "directory unavailable, try again later")
			return "", "", false
		case err != nil:
			h.log.Warn("autoconfig: domain lookup failed", "document", doc, "err", err)
			httpError(w, http.StatusInternalServerError, "internal error")
			return "", "", false
		case !hosted:
			h.log.Debug("autoconfig request refused", "document", doc, "reason", "domain not served", "domain", domain)
			httpError(w, http.StatusNotFound, "domain not served here")
			return "", "", false
		}
	}
	h.log.Debug("autoconfig served", "document", doc, "address", addr)
	return addr, domain, true
}

// write sends a generated document; documents name the address, so no
// cache may keep them.
func write(w http.ResponseWriter, contentType string, body *bytes.Buffer) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body.Bytes()) // the client may be gone
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, msg, code)
}
