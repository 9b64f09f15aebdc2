package autoconfig

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Standard ports of the services the documents advertise.
const (
	PortIMAPS       = 993
	PortIMAP        = 143
	PortPOP3S       = 995
	PortPOP3        = 110
	PortSubmissions = 465
	PortSubmission  = 587
)

// Config is what the documents advertise: one host and a port per
// service. A port of 0 leaves that service out of every document.
type Config struct {
	// Host is the host name clients connect to for every service (it
	// should be a name the TLS certificate carries).
	Host string
	// IMAPS is IMAP over implicit TLS, IMAP is IMAP with STARTTLS.
	IMAPS, IMAP int
	// POP3S is POP3 over implicit TLS, POP3 is POP3 with STLS.
	POP3S, POP3 int
	// Submissions is message submission over implicit TLS (RFC 8314),
	// Submission is submission with STARTTLS (RFC 6409).
	Submissions, Submission int
	// Logger receives debug records of the requests served; nil
	// discards them.
	Logger *slog.Logger
}

// StandardPorts returns a Config for host advertising every service on
// its standard port.
func StandardPorts(host string) Config {
	return Config{
		Host:  host,
		IMAPS: PortIMAPS, IMAP: PortIMAP,
		POP3S: PortPOP3S, POP3: PortPOP3,
		Submissions: PortSubmissions, Submission: PortSubmission,
	}
}

// ErrConfig is wrapped by the errors of Config.Check.
var ErrConfig = errors.New("invalid autoconfig settings")

// Check reports whether the settings can be advertised: a host name
// and ports from 0 to 65535.
func (c Config) Check() error {
	var errs []error
	if c.Host == "" || len(c.Host) > 253 || strings.ContainsFunc(c.Host, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.')
	}) {
		errs = append(errs, fmt.Errorf("host %q: not a host name: %w", c.Host, ErrConfig))
	}
	for _, s := range c.all() {
		if s.port < 0 || s.port > 65535 {
			errs = append(errs, fmt.Errorf("%s port %d: want 0 to 65535: %w", s.name, s.port, ErrConfig))
		}
	}
	return errors.Join(errs...)
}

// Kinds of service.
const (
	kindIMAP = "imap"
	kindPOP3 = "pop3"
	kindSMTP = "smtp"
)

// service is one way of reaching the node.
type service struct {
	name string // the RFC 6186 / RFC 8314 SRV service name
	kind string
	port int
	// implicitTLS: TLS from the first byte; else STARTTLS (STLS) before
	// login.
	implicitTLS bool
	// priority is the SRV priority: implicit TLS before STARTTLS (RFC
	// 8314 section 5.1), IMAP before POP3.
	priority int
}

// all returns every service in order of preference, offered or not.
func (c Config) all() []service {
	return []service{
		{"imaps", kindIMAP, c.IMAPS, true, 0},
		{"imap", kindIMAP, c.IMAP, false, 10},
		{"pop3s", kindPOP3, c.POP3S, true, 20},
		{"pop3", kindPOP3, c.POP3, false, 30},
		{"submissions", kindSMTP, c.Submissions, true, 0},
		{"submission", kindSMTP, c.Submission, false, 10},
	}
}

// offered returns the services of one kind that are advertised, in
// order of preference.
func (c Config) offered(kind string) []service {
	var out []service
	for _, s := range c.all() {
		if s.kind == kind && s.port > 0 {
			out = append(out, s)
		}
	}
	return out
}
