package protocols

import (
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"time"
)

// The frontends report what they do to small observer interfaces, which
// the node implements with Prometheus (node/metrics.go): protocols never
// import a metrics library. Every method must be quick, must not block
// and must be safe for concurrent use; the frontends call them on their
// hot paths. A nil observer in a frontend's configuration means nobody is
// told.

// ConnObserver is told about the connections of one listener
// (TimeoutListenerConfig.Observer).
type ConnObserver interface {
	// ConnOpened is called when a connection is accepted (after the
	// connection limits let it in), ConnClosed once when it is closed.
	ConnOpened()
	ConnClosed()
	// BytesRead and BytesWritten count what went over the connection:
	// the bytes on the wire, TLS records included.
	BytesRead(n int)
	BytesWritten(n int)
	// TLSEstablished is called once a TLS handshake (implicit, STARTTLS
	// or STLS) on the connection has been verified, with the version and
	// cipher suite negotiated (tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256...).
	TLSEstablished(version, cipherSuite uint16)
}

// CommandOther is the command name reported for a command a frontend
// does not know, so that command names stay a bounded set.
const CommandOther = "other"

// CommandObserver is told about every command a frontend has answered.
type CommandObserver interface {
	// Command reports one command: name is one of the frontend's
	// command names (its package's Commands) or CommandOther, ok tells a
	// success from a refusal or failure, and d is how long the command
	// took, from when the frontend's code started on it until it had
	// answered (or, where the library writes the answer, until our code
	// returned it).
	Command(name string, ok bool, d time.Duration)
}

// DeliveryResult is how an SMTP message transaction ended, by the class
// of its reply code.
type DeliveryResult string

// The results of a delivery.
const (
	// DeliveryAccepted: the message was stored (2xx).
	DeliveryAccepted DeliveryResult = "accepted"
	// DeliveryTemporary: refused with a 4xx reply; the sender retries.
	DeliveryTemporary DeliveryResult = "temporary"
	// DeliveryPermanent: refused with a 5xx reply; the sender bounces it.
	DeliveryPermanent DeliveryResult = "permanent"
)

// DeliveryResults lists every DeliveryResult.
var DeliveryResults = []DeliveryResult{DeliveryAccepted, DeliveryTemporary, DeliveryPermanent}

// ReplyClass is the reason class of a reply: the subject of its RFC 3463
// enhanced status code (the middle digit of 5.1.1).
type ReplyClass string

// The reason classes, after RFC 3463 section 3.
const (
	// ClassNone is the class of an accepted message.
	ClassNone ReplyClass = "none"
	// ClassOther is X.0.X, and any code outside RFC 3463's subjects.
	ClassOther ReplyClass = "other"
	// ClassAddress is X.1.X: a bad or unknown address.
	ClassAddress ReplyClass = "address"
	// ClassMailbox is X.2.X: the mailbox is full, disabled, too small.
	ClassMailbox ReplyClass = "mailbox"
	// ClassSystem is X.3.X: the mail system (message too big, store
	// failure, shutting down).
	ClassSystem ReplyClass = "system"
	// ClassNetwork is X.4.X: network or routing (timeouts, broken
	// connections).
	ClassNetwork ReplyClass = "network"
	// ClassProtocol is X.5.X: the mail delivery protocol (bad sequence,
	// bad syntax, lines too long).
	ClassProtocol ReplyClass = "protocol"
	// ClassContent is X.6.X: message content or media.
	ClassContent ReplyClass = "content"
	// ClassPolicy is X.7.X: security or policy (relaying denied, spam or
	// virus found, content filter unavailable).
	ClassPolicy ReplyClass = "policy"
)

// RefusalClasses lists every ReplyClass a refused delivery may have.
var RefusalClasses = []ReplyClass{ClassOther, ClassAddress, ClassMailbox, ClassSystem, ClassNetwork, ClassProtocol, ClassContent, ClassPolicy}

// ClassifyReply returns the result and reason class of an SMTP reply that
// ended a message transaction: code is the reply code (250, 451, 550...)
// and enhanced its RFC 3463 code.
func ClassifyReply(code int, enhanced [3]int) (DeliveryResult, ReplyClass) {
	var result DeliveryResult
	switch code / 100 {
	case 2:
		return DeliveryAccepted, ClassNone
	case 4:
		result = DeliveryTemporary
	default:
		result = DeliveryPermanent
	}
	classes := [...]ReplyClass{ClassOther, ClassAddress, ClassMailbox, ClassSystem, ClassNetwork, ClassProtocol, ClassContent, ClassPolicy}
	if s := enhanced[1]; s >= 0 && s < len(classes) {
		return result, classes[s]
	}
	return result, ClassOther
}

// DeliveryObserver is told how every SMTP message transaction ended (at
// the end of DATA or of the last BDAT chunk).
type DeliveryObserver interface {
	// Delivery reports one message transaction; class is ClassNone for an
	// accepted message.
	Delivery(result DeliveryResult, class ReplyClass)
}

// ObserveHandshakes returns a copy of cfg that calls started when a
// server handshake receives the client's hello, with the connection the
// handshake runs on, and calls the function started returned (when not
// nil) once the handshake has been verified. A frontend times the
// STARTTLS it cannot see otherwise with it. It leaves cfg's own
// GetConfigForClient and VerifyConnection in place.
func ObserveHandshakes(cfg *tls.Config, started func(conn net.Conn) (verified func(*tls.ConnectionState))) *tls.Config {
	if cfg == nil {
		return nil
	}
	inner := cfg.Clone()
	outer := cfg.Clone()
	outer.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		chosen := inner
		if inner.GetConfigForClient != nil {
			c, err := inner.GetConfigForClient(hello)
			if err != nil {
				return nil, err
			}
			if c != nil {
				chosen = c
			}
		}
		done := started(hello.Conn)
		if done == nil {
			if chosen == inner {
				return nil, nil
			}
			return chosen, nil
		}
		out := chosen.Clone()
		out.GetConfigForClient = nil
		verify := chosen.VerifyConnection
		out.VerifyConnection = func(cs tls.ConnectionState) error {
			if verify != nil {
				if err := verify(cs); err != nil {
					return err
				}
			}
			done(&cs)
			return nil
		}
		return out, nil
	}
	return outer
}

// CommandTimer measures one command that a library runs in steps our
// code sees only in part (a SASL exchange, a TLS handshake): Start it
// when the command begins, Touch it as it progresses, Finish it with the
// outcome (or Confirm it once its success shows), and Flush it when the
// connection ends, which reports a command that never finished as
// failed. It is safe for concurrent use; the zero value is ready.
type CommandTimer struct {
	mu      sync.Mutex
	name    string
	start   time.Time
	last    time.Time
	running bool
}

// Start begins timing the command name at now, reporting a command still
// running as failed first.
func (t *CommandTimer) Start(obs CommandObserver, name string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.flushLocked(obs)
	t.name, t.start, t.last, t.running = name, now, now, true
}

// Touch records that the command made progress at now: a command that
// never finishes is reported as lasting until its last progress.
func (t *CommandTimer) Touch(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.running {
		t.last = now
	}
}

// Finish reports the running command, if any, with its outcome.
func (t *CommandTimer) Finish(obs CommandObserver, ok bool, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.running {
		return
	}
	t.running = false
	obs.Command(t.name, ok, now.Sub(t.start))
}

// Confirm reports the running command, if any, as successful, lasting
// until its last progress: for a command whose end our code sees only
// later, such as a TLS handshake that completes when the client's first
// command after it is read.
func (t *CommandTimer) Confirm(obs CommandObserver) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.running {
		return
	}
	t.running = false
	obs.Command(t.name, true, t.last.Sub(t.start))
}

// Running reports whether a command is being timed.
func (t *CommandTimer) Running() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.running
}

// Flush reports a command still running as failed.
func (t *CommandTimer) Flush(obs CommandObserver) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.flushLocked(obs)
}

func (t *CommandTimer) flushLocked(obs CommandObserver) {
	if t.running {
		t.running = false
		obs.Command(t.name, false, t.last.Sub(t.start))
	}
}

// DeliveryMeta is the metadata of one SMTP message transaction: when,
// from where, the envelope, the Message-ID, the TLS in use and the
// outcome. Never any of the message's content.
type DeliveryMeta struct {
	Time time.Time
	// Port is "mx" or "submission".
	Port string
	// Remote is the sending client's address.
	Remote netip.Addr
	// From is the envelope sender; Recipients the accepted recipients.
	From       string
	Recipients []string
	// MessageID is the Message-ID field ("" when the message has none).
	MessageID string
	// TLS is the TLS version and cipher suite ("" without TLS).
	TLS    string
	Result DeliveryResult
	// Reply is the reply code and enhanced code, "250 2.0.0".
	Reply string
	// User is the authenticated submitter ("" on the MX port).
	User string
}

// DeliveryLog keeps the metadata of deliveries (for the users' records
// and their retention). RecordDelivery must not block: it queues.
type DeliveryLog interface {
	RecordDelivery(DeliveryMeta)
}
