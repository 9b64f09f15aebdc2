package node

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/mailcluster/mailcluster/protocols/autoconfig"
)

// AutoconfigConfig is what the client autoconfiguration documents on the
// HTTP listener (Thunderbird autoconfig, Outlook autodiscover, Apple
// .mobileconfig) and "mailnode domain dns" advertise: the host clients
// connect to and a port per service. The ports are the standard ones
// unless set, whatever the node listens on (a NAT, a proxy or a port
// forward maps them). A port of 0 leaves its service out, and so does a
// disabled listener.
type AutoconfigConfig struct {
	// Host is the name clients connect to ("" means hostname). In a
	// cluster, a name that reaches every node (and that the TLS
	// certificate carries).
	Host string `toml:"host"`
	// IMAPSPort and IMAPPort are advertised for IMAP over implicit TLS
	// and with STARTTLS (993 and 143).
	IMAPSPort int `toml:"imaps_port"`
	IMAPPort  int `toml:"imap_port"`
	// POP3SPort and POP3Port are advertised for POP3 over implicit TLS
	// and with STLS (995 and 110).
	POP3SPort int `toml:"pop3s_port"`
	POP3Port  int `toml:"pop3_port"`
	// SubmissionsPort and SubmissionPort are advertised for message
	// submission over implicit TLS and with STARTTLS (465 and 587).
	SubmissionsPort int `toml:"submissions_port"`
	SubmissionPort  int `toml:"submission_port"`
}

// defaultAutoconfig advertises the standard ports on hostname.
func defaultAutoconfig() AutoconfigConfig {
	return AutoconfigConfig{
		IMAPSPort:       autoconfig.PortIMAPS,
		IMAPPort:        autoconfig.PortIMAP,
		POP3SPort:       autoconfig.PortPOP3S,
		POP3Port:        autoconfig.PortPOP3,
		SubmissionsPort: autoconfig.PortSubmissions,
		SubmissionPort:  autoconfig.PortSubmission,
	}
}

func (a AutoconfigConfig) validate() []error {
	var errs []error
	if a.Host != "" && (len(a.Host) > 253 || !hostnamePattern.MatchString(a.Host)) {
		errs = append(errs, fmt.Errorf("autoconfig.host %q: not a valid host name", a.Host))
	}
	for _, p := range []struct {
		key  string
		port int
	}{
		{"imaps_port", a.IMAPSPort}, {"imap_port", a.IMAPPort},
		{"pop3s_port", a.POP3SPort}, {"pop3_port", a.POP3Port},
		{"submissions_port", a.SubmissionsPort}, {"submission_port", a.SubmissionPort},
	} {
		if p.port < 0 || p.port > 65535 {
			errs = append(errs, fmt.Errorf("autoconfig.%s %d: want 1 to 65535, or 0 to leave the service out", p.key, p.port))
		}
	}
	return errs
}

// advertised returns what the node tells mail clients: autoconfig.host
// (or hostname) and the autoconfig ports of the listeners that are
// enabled.
func (c Config) advertised() autoconfig.Config {
	a := c.Autoconfig
	host := a.Host
	if host == "" {
		host = c.Hostname
	}
	port := func(listener string, p int) int {
		if c.Listen.Get(listener) == "" {
			return 0
		}
		return p
	}
	return autoconfig.Config{
		Host:        host,
		IMAPS:       port(ListenIMAPS, a.IMAPSPort),
		IMAP:        port(ListenIMAP, a.IMAPPort),
		POP3S:       port(ListenPOP3S, a.POP3SPort),
		POP3:        port(ListenPOP3, a.POP3Port),
		Submissions: port(ListenSubmissions, a.SubmissionsPort),
		Submission:  port(ListenSubmission, a.SubmissionPort),
	}
}

// registerAutoconfig adds the client autoconfiguration routes (see
// autoconfig.Paths) to the HTTP listener's mux. They answer only for
// domains the directory serves, and never look a user up.
func (n *Node) registerAutoconfig(mux *http.ServeMux) error {
	if n.directory == nil {
		return errors.New("autoconfig: directory not open")
	}
	cfg := n.cfg.advertised()
	cfg.Logger = n.log.With("component", "autoconfig")
	h, err := autoconfig.New(cfg, n.directory)
	if err != nil {
		return fmt.Errorf("autoconfig: %w", err)
	}
	h.Register(mux)
	return nil
}
