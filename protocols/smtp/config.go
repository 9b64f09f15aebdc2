package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/filter"
	"github.com/mailcluster/mailcluster/protocols/mailauth"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Mode selects what an SMTP server is for.
type Mode int

const (
	// ModeMX accepts mail from other servers for local recipients only. It
	// offers STARTTLS and no AUTH; the null reverse-path is allowed.
	ModeMX Mode = iota + 1
	// ModeSubmission accepts mail from authenticated local users (RFC 6409).
	// AUTH is offered only over TLS, and the envelope sender must be the
	// user's own address.
	ModeSubmission
)

// String returns the mode's name as it appears in logs.
func (m Mode) String() string {
	switch m {
	case ModeMX:
		return "mx"
	case ModeSubmission:
		return "submission"
	default:
		return fmt.Sprintf("mode(%d)", int(m))
	}
}

// Defaults for the zero values of Config's limits.
const (
	// DefaultMaxMessageBytes is the largest message accepted (advertised as
	// SIZE).
	DefaultMaxMessageBytes = 50 << 20
	// DefaultMaxHeaderBytes bounds the header section of a message.
	DefaultMaxHeaderBytes = 1 << 20
	// DefaultMaxRecipients bounds RCPT commands per transaction; RFC 5321
	// section 4.5.3.1.8 asks for at least 100.
	DefaultMaxRecipients = 100
	// DefaultMaxLineLength bounds command and DATA lines: twice the 1000
	// octets of RFC 5321 section 4.5.3.1.6, as go-smtp does.
	DefaultMaxLineLength = 2000
	// DefaultReadTimeout is how long the server waits for the next command
	// or the next bytes of a message (RFC 5321 section 4.5.3.2.7).
	DefaultReadTimeout = 5 * time.Minute
	// DefaultWriteTimeout is how long a reply may take to be sent.
	DefaultWriteTimeout = time.Minute
	// DefaultDataTimeout bounds the whole transfer of one message.
	DefaultDataTimeout = 30 * time.Minute
	// DefaultStoreTimeout bounds one call to the store (lookup, login,
	// delivery).
	DefaultStoreTimeout = 2 * time.Minute
)

// Config configures one SMTP server. Zero limits mean the defaults above.
type Config struct {
	// Mode is ModeMX or ModeSubmission; it must be set.
	Mode Mode
	// Hostname is announced in the greeting and recorded in Received
	// headers and generated Message-IDs.
	Hostname string
	// TLS enables STARTTLS and is used for implicit-TLS listeners (see
	// Server.Serve). Nil disables TLS, which is only for tests.
	TLS *tls.Config
	// Guard throttles failed logins; it is required for ModeSubmission.
	Guard *protocols.AuthGuard
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// AllowInsecureAuth offers AUTH on connections without TLS. Tests only.
	AllowInsecureAuth bool
	// Filter, when set, scans every message before it is stored (spam,
	// viruses): a rejected message gets 550 (spam) or 554 (virus) at the
	// end of DATA, a deferred one 451, and spam goes to Junk.
	Filter *filter.Chain
	// AuthCheck, when set, checks SPF, DKIM and DMARC of every message on
	// the MX port: the result goes into an Authentication-Results field,
	// DMARC p=reject gets 550 5.7.1 and p=quarantine sends it to Junk.
	AuthCheck *mailauth.Checker
	// Observer, if set, is told about every command of Commands, and
	// Deliveries about how every message transaction ended.
	Observer   protocols.CommandObserver
	Deliveries protocols.DeliveryObserver
	// CommandRate, if set, limits the commands per client address (shared
	// by every frontend of the node): see Server.checkRate.
	CommandRate *protocols.CommandLimiter
	// DeliveryLog, if set, receives the metadata of every message
	// transaction that ended with a reply (accepted or refused at DATA or
	// BDAT), for the users' delivery records.
	DeliveryLog protocols.DeliveryLog
	// Outbound, when set on a submission server, lets authenticated
	// users send to remote recipients from the addresses they own:
	// remote recipients are committed to the outbound queue before 250.
	// Without it, remote recipients get 550 5.7.1.
	Outbound Outbound
	// Postmaster, when set on an MX server, returns the address that
	// "RCPT TO:<postmaster>" without a domain is delivered to (RFC 5321
	// section 4.5.1): the postmaster of the primary domain. "" leaves
	// the command to go-smtp, which refuses it with 501.
	Postmaster func() string
	// Forwarder, when set on an MX server, forwards mail for aliases
	// with targets outside the cluster and relays bounces to our SRS
	// addresses (see Forwarder); committed before 250 like local mail.
	Forwarder Forwarder
	// WithheldForwards, if set, is told about forwarded recipients of
	// a message judged junk (reason JunkSpam or JunkDMARCQuarantine),
	// which are not forwarded (see withholdForwards).
	WithheldForwards func(reason string, recipients int)

	// MaxMessageBytes is the largest message accepted, before the trace
	// headers this server adds; EHLO advertises it as SIZE. A larger
	// declared SIZE or message gets 552 5.3.4. On the submission ports,
	// go-smtp's DATA reader accepts one byte less (see NewServer); over
	// BDAT, and over DATA on the MX port (whose front hands DATA on as
	// BDAT), the limit is exact.
	MaxMessageBytes int64
	// MaxHeaderBytes bounds the header section of a message.
	MaxHeaderBytes int
	// MaxRecipients bounds the recipients of one transaction.
	MaxRecipients int
	// MaxLineLength bounds command lines and lines of DATA.
	MaxLineLength int
	// ReadTimeout is the idle timeout while waiting for a command or for
	// more message data.
	ReadTimeout time.Duration
	// WriteTimeout bounds the sending of one reply.
	WriteTimeout time.Duration
	// DataTimeout bounds the transfer of one whole message.
	DataTimeout time.Duration
	// StoreTimeout bounds one store call.
	StoreTimeout time.Duration
	// Now is the clock used for Received and Date headers; nil means
	// time.Now.
	Now func() time.Time
}

// Outbound is what the submission port needs to send mail outside the
// cluster; the mail store's outbound queue satisfies it.
type Outbound interface {
	// SendsAs reports whether the user with address user may send from
	// address (their own, an alias of theirs, a plus-address of either).
	SendsAs(ctx context.Context, user, address string) (bool, error)
	// Submit commits a message for remote recipients to the outbound
	// queue; it returns nil only once the message is committed.
	Submit(ctx context.Context, sub schema.Submission) error
	// SaveSent stores a copy of a message the user sent in their Sent
	// mailbox when their domain asks for it (else it does nothing); it
	// returns nil only once the copy is committed.
	SaveSent(ctx context.Context, user string, msg, fingerprint []byte) error
}

// Forwarder is what the MX port needs to forward mail out of the
// cluster; the mail store satisfies it.
type Forwarder interface {
	// Forwards reports whether mail to rcpt leaves the cluster: forward
	// for an alias with targets outside it, bounce (with forward) for an
	// SRS address of ours, whose mail goes only to the original sender.
	// schema.ErrNoSuchUser: rcpt forwards nowhere (or is an SRS address
	// that does not check out).
	Forwards(ctx context.Context, rcpt string) (forward, bounce bool, err error)
	// Forward commits the forwardings of a message to the outbound
	// queue; it returns nil only once they are committed.
	Forward(ctx context.Context, f schema.Forwarding) error
}

// withDefaults checks cfg and fills in its zero values.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Mode != ModeMX && cfg.Mode != ModeSubmission {
		return cfg, fmt.Errorf("smtp config: invalid mode %v", cfg.Mode)
	}
	if cfg.Hostname == "" {
		return cfg, errors.New("smtp config: hostname is required")
	}
	if cfg.Mode == ModeSubmission {
		if cfg.Guard == nil {
			return cfg, errors.New("smtp config: submission needs an auth guard")
		}
		if cfg.TLS == nil && !cfg.AllowInsecureAuth {
			return cfg, errors.New("smtp config: submission needs TLS (or AllowInsecureAuth in tests)")
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if int64(cfg.MaxHeaderBytes) > cfg.MaxMessageBytes {
		cfg.MaxHeaderBytes = int(cfg.MaxMessageBytes)
	}
	if cfg.MaxRecipients <= 0 {
		cfg.MaxRecipients = DefaultMaxRecipients
	}
	if cfg.MaxLineLength <= 0 {
		cfg.MaxLineLength = DefaultMaxLineLength
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.DataTimeout <= 0 {
		cfg.DataTimeout = DefaultDataTimeout
	}
	if cfg.StoreTimeout <= 0 {
		cfg.StoreTimeout = DefaultStoreTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg, nil
}
