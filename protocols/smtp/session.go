package smtp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/filter"
	"github.com/mailcluster/mailcluster/protocols/mailauth"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// maxAddressLength bounds envelope addresses (RFC 5321 section 4.5.3.1.3
// limits a path to 256 octets including the angle brackets).
const maxAddressLength = 254

// session is one go-smtp session: from a HELO/EHLO to QUIT, the end of the
// connection, or STARTTLS (which starts a new session).
type session struct {
	srv    *Server
	conn   *gosmtp.Conn
	id     string // connection id, shared by the sessions of one connection
	remote netip.Addr
	log    *slog.Logger

	// mu guards the fields below: go-smtp runs Data for BDAT in its own
	// goroutine, which may overlap RSET or a new EHLO (Reset).
	mu   sync.Mutex
	helo string // the HELO/EHLO argument last accepted, see checkRepeatedHelo
	user string // authenticated address; empty until AUTH succeeds
	// untrack unregisters the authenticated session (under mu); nil when
	// none.
	untrack func()
	txns    int         // transactions started, numbering the queue ids
	tx      transaction // the transaction in progress
	bdat    *bdatCall   // the last Data call fed by BDAT, see bdat.go
	// awaited is open from an accepted recipient until a Data begins
	// (transferPending).
	awaited chan struct{}
}

// transaction is the envelope of the message being received, and what
// the trace header needs about the connection, captured at MAIL on
// go-smtp's connection goroutine (Data may run on another one, while
// go-smtp changes these on EHLO or STARTTLS).
type transaction struct {
	fromSet bool
	from    string
	utf8    bool
	// requireTLS is MAIL FROM's REQUIRETLS (RFC 8689).
	requireTLS bool
	sizeHint   int64
	rcpts      []string
	seen       map[string]bool // lower-cased recipients already accepted
	remote     map[string]bool // recipients outside the cluster (submission with Outbound)
	forward    map[string]bool // recipients forwarded out of the cluster (MX with Forwarder)
	noLocal    map[string]bool // forwarded recipients with no local copy (SRS addresses, aliases of outside targets only)

	conn    net.Conn // the connection, for deadlines and hanging up
	helo    string   // the EHLO/HELO argument
	tlsDesc string   // protocols.DescribeTLS, "" without TLS
	auth    bool     // the client authenticated
}

var (
	_ gosmtp.Session     = (*session)(nil)
	_ gosmtp.AuthSession = (*session)(nil)
)

// newSession is go-smtp's Backend: it runs at the first HELO/EHLO of a
// connection and again after STARTTLS.
func (s *Server) newSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	if !s.enter() {
		return nil, errShuttingDown
	}
	defer s.leave()
	id, ok := connIDOf(c.Conn())
	if !ok {
		var err error
		if id, err = newConnID(); err != nil {
			return nil, &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "Temporary server error"}
		}
	}
	remote := protocols.RemoteIP(c.Conn().RemoteAddr())
	log := s.log.With("conn", id, "remote", remote.String())
	if err := s.checkRate(c.Conn(), remote, log); err != nil {
		return nil, err
	}
	if !acceptableHelo(c.Hostname()) {
		// RFC 5321 section 4.1.1.1. go-smtp answers with errBadHelo and
		// forgets the argument; the client may send HELO/EHLO again.
		log.Info("command refused", "op", "helo", "code", errBadHelo.Code, "enhanced", "5.5.4", "helo", quoteHelo(c.Hostname()))
		return nil, errBadHelo
	}
	sess := &session{
		srv:    s,
		conn:   c,
		id:     id,
		remote: remote,
		log:    log,
		helo:   c.Hostname(),
	}
	if f, ok := c.Conn().(*frontConn); ok {
		f.watchRecipients(sess.hasRecipients)
	}
	_, isTLS := connTLS(c)
	sess.log.Info("session started", "tls", isTLS)
	sess.log.Debug("client hello", "helo", sanitize(c.Hostname(), 255))
	return sess, nil
}

// transferBegun tells whoever holds a read error back until this
// transaction's Data runs (the MX front, a submission connection: see
// frontConn.awaitTransferStart) that it does.
func (s *session) transferBegun() {
	s.mu.Lock()
	if s.awaited != nil {
		close(s.awaited)
		s.awaited = nil
	}
	s.mu.Unlock()
	if f, ok := s.conn.Conn().(*frontConn); ok {
		f.dataBegun()
	}
}

// transferPending returns, while a recipient has been accepted and no
// Data has begun since, a channel closed when one begins; else nil. A
// reset does not clear it: go-smtp may have taken a BDAT before the RSET
// and not started its Data yet.
func (s *session) transferPending() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.awaited
}

// hasRecipients reports whether the transaction has a sender and a
// recipient, as go-smtp requires before it takes message data.
func (s *session) hasRecipients() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tx.fromSet && len(s.tx.rcpts) > 0
}

// Reset discards the transaction in progress (RSET, a new EHLO, the end of
// a transaction). After a new HELO/EHLO it checks the new argument.
func (s *session) Reset() {
	s.mu.Lock()
	s.tx = transaction{}
	s.mu.Unlock()
	s.checkRepeatedHelo()
}

// Logout ends the session. The session holds no store resources: the
// Account of a login is closed as soon as its address is known.
func (s *session) Logout() error {
	s.mu.Lock()
	if s.untrack != nil {
		s.untrack()
		s.untrack = nil
	}
	s.mu.Unlock()
	if !s.srv.enter() {
		return nil
	}
	defer s.srv.leave()
	s.mu.Lock()
	txns := s.txns
	s.mu.Unlock()
	s.log.Info("session ended", "transactions", txns)
	return nil
}

// AuthMechanisms lists the SASL mechanisms offered; MX offers none.
// go-smtp asks only once TLS is up (or AllowInsecureAuth is set).
func (s *session) AuthMechanisms() []string {
	if s.srv.cfg.Mode != ModeSubmission {
		return nil
	}
	return []string{"PLAIN", "LOGIN"}
}

// Auth starts a SASL exchange for mech.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if err := s.srv.checkRate(s.conn.Conn(), s.remote, s.log); err != nil {
		return nil, err
	}
	if s.srv.cfg.Mode != ModeSubmission {
		return nil, &gosmtp.SMTPError{Code: 502, EnhancedCode: gosmtp.EnhancedCode{5, 5, 1}, Message: "Authentication is not available on this port, use submission"}
	}
	return s.saslServer(mech)
}

// Mail starts a transaction with the envelope sender from ("" for the
// null reverse-path).
func (s *session) Mail(from string, opts *gosmtp.MailOptions) error {
	if !s.srv.enter() {
		return errShuttingDown
	}
	defer s.srv.leave()
	if err := s.srv.checkRate(s.conn.Conn(), s.remote, s.log); err != nil {
		return err
	}
	s.awaitPreviousBDAT()
	s.Reset()
	utf8Mode := opts != nil && opts.UTF8
	if e := checkAddress(from, utf8Mode); e != nil {
		return s.refuse("mail", e)
	}
	s.mu.Lock()
	user := s.user
	s.mu.Unlock()
	if s.srv.cfg.Mode == ModeSubmission {
		switch {
		case user == "":
			return s.refuse("mail", protocols.Permanentf(530, [3]int{5, 7, 0}, nil, "Authentication required"))
		case from == "":
			return s.refuse("mail", protocols.Permanentf(553, [3]int{5, 7, 1}, nil, "The null sender is not allowed on submission; use your own address"))
		}
		if e := s.checkSender(user, from); e != nil {
			return s.refuse("mail", e)
		}
	}
	tx := transaction{fromSet: true, from: from, utf8: utf8Mode, conn: s.conn.Conn(), helo: s.conn.Hostname(), auth: user != ""}
	if state, ok := connTLS(s.conn); ok {
		tx.tlsDesc = protocols.DescribeTLS(&state)
	}
	if opts != nil && opts.RequireTLS {
		// RFC 8689 section 4.1: only on a connection that is TLS now
		// (go-smtp advertises REQUIRETLS only then, but parses it always).
		if tx.tlsDesc == "" {
			return s.refuse("mail", protocols.Permanentf(530, [3]int{5, 7, 10}, nil, "REQUIRETLS needs a TLS connection"))
		}
		tx.requireTLS = true
	}
	if opts != nil && opts.Size > 0 {
		if opts.Size > s.srv.cfg.MaxMessageBytes {
			// RFC 1870 section 6. go-smtp refuses this before us; kept so
			// that the limit does not depend on the library's check.
			return s.refuse("mail", errMessageTooLarge(nil))
		}
		tx.sizeHint = opts.Size
	}
	s.mu.Lock()
	s.tx = tx
	s.mu.Unlock()
	s.log.Debug("mail from", "from", from, "utf8", utf8Mode)
	return nil
}

// Rcpt adds a recipient after checking that it is a local mailbox.
func (s *session) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	if !s.srv.enter() {
		return errShuttingDown
	}
	defer s.srv.leave()
	if err := s.srv.checkRate(s.conn.Conn(), s.remote, s.log); err != nil {
		return err
	}
	s.mu.Lock()
	utf8Mode, dup := s.tx.utf8, s.tx.seen[strings.ToLower(to)]
	s.mu.Unlock()
	if e := checkAddress(to, utf8Mode); e != nil {
		return s.refuse("rcpt", e)
	}
	if to == "" {
		return s.refuse("rcpt", protocols.Permanentf(501, [3]int{5, 1, 3}, nil, "Empty recipient address"))
	}
	if dup {
		// Already accepted in this transaction; deliver once.
		return nil
	}
	ctx, cancel := context.WithTimeout(s.srv.ctx, s.srv.cfg.StoreTimeout)
	defer cancel()
	remote := false
	lerr := s.srv.store.LookupRecipient(ctx, to)
	forward, bounce, err := s.forwards(ctx, to, lerr)
	if err != nil {
		return s.refuse("rcpt", s.recipientError(err))
	}
	if lerr != nil && !forward {
		if !s.sendsOut(lerr) || strings.LastIndexByte(to, '@') <= 0 {
			return s.refuse("rcpt", s.recipientError(lerr))
		}
		remote = true
	}
	if lerr == nil {
		if e := s.checkQuota(ctx, to); e != nil {
			return s.refuse("rcpt", e)
		}
	}
	s.mu.Lock()
	if s.tx.seen == nil {
		s.tx.seen = make(map[string]bool)
	}
	if forward {
		if s.tx.forward == nil {
			s.tx.forward, s.tx.noLocal = make(map[string]bool), make(map[string]bool)
		}
		s.tx.forward[to], s.tx.noLocal[to] = true, bounce || lerr != nil
	}
	if remote {
		if s.tx.remote == nil {
			s.tx.remote = make(map[string]bool)
		}
		s.tx.remote[to] = true
	}
	s.tx.seen[strings.ToLower(to)] = true
	s.tx.rcpts = append(s.tx.rcpts, to)
	if s.awaited == nil {
		s.awaited = make(chan struct{})
	}
	s.mu.Unlock()
	s.log.Debug("rcpt to", "to", to)
	return nil
}

// recipientError maps a LookupRecipient or Deliver failure to the reply.
func (s *session) recipientError(err error) *protocols.Error {
	switch {
	case errors.Is(err, schema.ErrNotLocal), errors.Is(err, schema.ErrNoSuchDomain):
		if s.srv.cfg.Mode == ModeSubmission {
			return protocols.Permanentf(550, [3]int{5, 7, 1}, err, "Delivery to remote domains is not available on this server yet")
		}
		return protocols.Permanentf(550, [3]int{5, 7, 1}, err, "Relaying denied")
	case errors.Is(err, schema.ErrNoSuchUser):
		return protocols.Permanentf(550, [3]int{5, 1, 1}, err, "No such user here")
	case errors.Is(err, schema.ErrInvalid):
		return protocols.Permanentf(501, [3]int{5, 1, 3}, err, "Bad recipient address syntax")
	default:
		return protocols.Temporaryf(451, [3]int{4, 3, 0}, err, "Temporary failure, try again later")
	}
}

// testHookDataStart, when set by a test, runs as Data starts: it delays
// go-smtp's goroutine for a BDAT transfer, as a loaded machine may.
var testHookDataStart func()

// Data reads, checks, stamps and delivers the message. It returns nil (250)
// only after Store.Deliver committed it.
func (s *session) Data(r io.Reader) (err error) {
	s.transferBegun()
	if !s.srv.enter() {
		return errShuttingDown
	}
	defer s.srv.leave()
	defer s.beginData(r)()
	if testHookDataStart != nil {
		testHookDataStart()
	}
	cfg := s.srv.cfg
	start := time.Now()
	s.mu.Lock()
	tx := s.tx
	tx.rcpts = append([]string(nil), s.tx.rcpts...)
	user := s.user
	s.txns++
	txnID := fmt.Sprintf("%s.%d", s.id, s.txns)
	s.mu.Unlock()
	if !tx.fromSet || len(tx.rcpts) == 0 {
		if pr, ok := r.(*io.PipeReader); ok {
			// go-smtp runs Data for BDAT on a goroutine of its own, and
			// a chunk it refused before that goroutine ran (the size
			// limit) reset the transaction, after closing r: r says why,
			// and that refusal is what the client heard.
			if _, err := pr.Read(make([]byte, 1)); err != nil {
				return s.readError(err, s.conn.Conn())
			}
		}
		// go-smtp checks this too; keep the invariant local.
		return s.refuse("data", protocols.Permanentf(503, [3]int{5, 5, 1}, nil, "Need MAIL and RCPT first"))
	}
	var msgID string
	if cfg.DeliveryLog != nil {
		defer func() { s.logDelivery(tx, msgID, start, err) }()
	}

	buf, err := s.readMessage(r, tx, start)
	if err != nil {
		return err
	}
	msg := buf[stampRoom:]
	if f, ok := tx.conn.(*frontConn); ok && f.dataConverted() && longestLine(msg) > cfg.MaxLineLength {
		return s.refuse("data", errLineTooLong(cfg.MaxLineLength, nil))
	}
	hdr, err := parseMessage(msg, cfg.MaxHeaderBytes)
	if err != nil {
		return s.refuse("data", messageError(err, cfg.MaxHeaderBytes))
	}
	msgID = sanitize(strings.TrimSpace(hdr.Get("Message-Id")), maxMessageIDLength)
	fingerprint := deliveryFingerprint(tx.from, hdr.Get("Message-Id"), msg)

	now := cfg.Now()
	trace := traceInfo{
		helo:     tx.helo,
		remote:   s.remote,
		hostname: cfg.Hostname,
		protocol: protocolName(tx.utf8, tx.tlsDesc != "", tx.auth),
		id:       txnID,
		tls:      tx.tlsDesc,
		rcpts:    tx.rcpts,
		from:     tx.from,
		date:     now,
	}
	var extra []byte
	if cfg.Mode == ModeSubmission {
		if e := s.checkHeaderFrom(user, hdr.Get("From")); e != nil {
			return s.refuse("data", e)
		}
		extra, err = submissionFields(hdr, now, cfg.Hostname)
		if err != nil {
			return s.refuse("data", protocols.Temporaryf(451, [3]int{4, 3, 0}, err, "Temporary failure, try again later"))
		}
	}
	var junk string // why the message goes to Junk: "dmarc-quarantine" or "spam"
	if cfg.Mode == ModeMX && cfg.AuthCheck != nil {
		// A sender cannot pass off verdicts of its own as ours.
		msg = mailauth.StripOurs(msg, cfg.AuthCheck.AuthServID)
		r := cfg.AuthCheck.Check(s.srv.ctx, s.remote, tx.helo, tx.from, msg)
		s.log.Info("sender checks", "id", txnID, "spf", string(r.SPF), "dmarc", string(r.DMARC), "action", r.Action.String())
		if r.Action == mailauth.Reject {
			return s.refuse("data", protocols.Permanentf(550, [3]int{5, 7, 1}, nil, "Message refused by the sender domain's DMARC policy"))
		}
		if r.Action == mailauth.Quarantine {
			junk = JunkDMARCQuarantine
		}
		extra = append(extra, r.Header...)
	}
	if cfg.Filter != nil {
		v, refusal := s.scan(tx, txnID, msg)
		if refusal != nil {
			return s.refuse("data", refusal)
		}
		if v.Action == filter.Junk && junk == "" {
			junk = JunkSpam
		}
		extra = append(extra, v.Headers...)
	}
	full := stamp(buf, msg, trace, extra)

	ctx, cancel := context.WithTimeout(s.srv.ctx, cfg.StoreTimeout)
	defer cancel()
	var local, remote, forward []string
	for _, r := range tx.rcpts {
		switch {
		case tx.remote[r]:
			remote = append(remote, r)
		case tx.forward[r]:
			forward = append(forward, r)
			if !tx.noLocal[r] {
				local = append(local, r) // the alias's targets in the cluster
			}
		default:
			local = append(local, r)
		}
	}
	if len(forward) > 0 && junk != "" {
		if e := s.withholdForwards(txnID, junk, forward, len(local)+len(remote)); e != nil {
			return s.refuse("data", e)
		}
		forward = nil
	}
	if len(forward) > 0 {
		if e := checkHops(msg); e != nil {
			return s.refuse("data", e)
		}
		f := schema.Forwarding{From: tx.from, Recipients: forward, Message: stampRelay(msg, trace, extra),
			UTF8: needsSMTPUTF8(tx.from, forward, msg), Fingerprint: fingerprint,
			RequireTLS: tx.requireTLS, TLSOptional: !tx.requireTLS && tlsNotRequired(hdr.Get("TLS-Required"))}
		if err := cfg.Forwarder.Forward(ctx, f); err != nil {
			return s.refuse("data", s.deliveryError(err))
		}
	}
	if len(remote) > 0 {
		sub := schema.Submission{User: user, From: tx.from, Recipients: remote, Message: stampRelay(msg, trace, extra),
			UTF8: needsSMTPUTF8(tx.from, remote, msg), Fingerprint: fingerprint,
			RequireTLS: tx.requireTLS, TLSOptional: !tx.requireTLS && tlsNotRequired(hdr.Get("TLS-Required"))}
		if err := cfg.Outbound.Submit(ctx, sub); err != nil {
			return s.refuse("data", s.deliveryError(err))
		}
	}
	if len(local) > 0 {
		d := schema.Delivery{From: tx.from, Recipients: local, Message: full, Fingerprint: fingerprint, Junk: junk != ""}
		if err := s.srv.store.Deliver(ctx, d); err != nil {
			return s.refuse("data", s.deliveryError(err))
		}
	}
	if cfg.Mode == ModeSubmission && cfg.Outbound != nil {
		if err := cfg.Outbound.SaveSent(ctx, user, stampRelay(msg, trace, extra), fingerprint); err != nil {
			return s.refuse("data", s.deliveryError(err))
		}
	}
	s.log.Info("message accepted", "id", txnID, "bytes", len(full), "recipients", len(tx.rcpts), "duration", time.Since(start).Round(time.Millisecond).String())
	s.log.Debug("message envelope", "id", txnID, "from", tx.from, "to", tx.rcpts)
	return nil
}

// maxMessageIDLength bounds the Message-ID a delivery record keeps.
const maxMessageIDLength = 255

// logDelivery hands the metadata of a message transaction that ended with
// err to the delivery log. A transaction that ended without a reply (the
// client aborted it, or the connection broke) is not recorded.
func (s *session) logDelivery(tx transaction, msgID string, start time.Time, err error) {
	m := protocols.DeliveryMeta{Time: start.UTC(), Port: s.srv.cfg.Mode.String(), Remote: s.remote, From: tx.from,
		Recipients: tx.rcpts, MessageID: msgID, TLS: tx.tlsDesc}
	var se *gosmtp.SMTPError
	switch {
	case err == nil:
		m.Result, m.Reply = protocols.DeliveryAccepted, "250 2.0.0"
	case errors.As(err, &se):
		m.Result, _ = protocols.ClassifyReply(se.Code, [3]int(se.EnhancedCode))
		m.Reply = fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	default:
		return
	}
	if s.srv.cfg.Mode == ModeSubmission {
		s.mu.Lock()
		m.User = s.user
		s.mu.Unlock()
	}
	s.srv.cfg.DeliveryLog.RecordDelivery(m)
}

// scan asks the content filter about msg. A refusal is the reply for a
// message that must not be stored (spam or virus found, or a scanner
// down when the policy is to defer).
func (s *session) scan(tx transaction, txnID string, msg []byte) (filter.Verdict, *protocols.Error) {
	s.mu.Lock()
	user := s.user
	s.mu.Unlock()
	env := filter.Envelope{RemoteIP: s.remote.String(), Helo: tx.helo, From: tx.from, Rcpts: tx.rcpts, User: user, QueueID: txnID}
	v := s.srv.cfg.Filter.Scan(s.srv.ctx, env, msg)
	switch v.Action {
	case filter.Reject:
		s.log.Info("message refused by content filter", "id", txnID, "scanner", v.Scanner, "reason", v.Reason)
		if v.Scanner == "clamd" {
			return v, protocols.Permanentf(554, [3]int{5, 7, 1}, nil, "Message refused: %s", v.Reason)
		}
		return v, protocols.Permanentf(550, [3]int{5, 7, 1}, nil, "Message refused as spam")
	case filter.Defer:
		s.log.Warn("message deferred: content filter unavailable", "id", txnID, "scanner", v.Scanner)
		return v, protocols.Temporaryf(451, [3]int{4, 7, 1}, nil, "Message could not be scanned; try again later")
	case filter.Junk:
		s.log.Info("message judged spam, delivered to Junk", "id", txnID, "reason", v.Reason)
	}
	return v, nil
}

// deliveryError maps a Deliver failure to the reply.
func (s *session) deliveryError(err error) *protocols.Error {
	switch {
	case errors.Is(err, schema.ErrOverQuota) && errors.Is(err, schema.ErrPartlyDelivered):
		// SMTP has one reply for every recipient of DATA (RFC 5321
		// section 3.3): a temporary one makes the sender try again
		// later, and the copies already stored are not stored twice
		// when the message has a Message-ID (Delivery.Fingerprint).
		return protocols.Temporaryf(452, [3]int{4, 2, 2}, err, "Mailbox full for some recipients, try again later")
	case errors.Is(err, schema.ErrOverQuota):
		return errMailboxFull(err)
	case errors.Is(err, schema.ErrTooLarge):
		return protocols.Permanentf(552, [3]int{5, 3, 4}, err, "Message too large for the mailbox")
	case errors.Is(err, schema.ErrNotLocal), errors.Is(err, schema.ErrNoSuchDomain),
		errors.Is(err, schema.ErrNoSuchUser), errors.Is(err, schema.ErrInvalid):
		return s.recipientError(err)
	default:
		return protocols.Temporaryf(451, [3]int{4, 3, 0}, err, "Temporary failure, message not accepted; try again later")
	}
}

// stampRoom is the space readMessage leaves in front of a message for the
// trace fields stamp puts there: Return-Path and Received take about 400
// bytes, the sender checks' and the filter's fields most of the rest.
const stampRoom = 2 << 10

// readMessage reads the whole message from r, bounded in size and time,
// into a buffer whose first stampRoom bytes are left free (see stamp);
// the message is what follows them.
func (s *session) readMessage(r io.Reader, tx transaction, start time.Time) ([]byte, error) {
	cfg := s.srv.cfg
	dr := &deadlineReader{r: r, conn: tx.conn, idle: cfg.ReadTimeout, end: start.Add(cfg.DataTimeout)}
	var buf bytes.Buffer
	buf.Grow(stampRoom + initialBufferSize(tx.sizeHint, cfg.MaxMessageBytes))
	buf.Write(make([]byte, stampRoom))
	if _, err := buf.ReadFrom(io.LimitReader(dr, cfg.MaxMessageBytes+1)); err != nil {
		return nil, s.readError(err, tx.conn)
	}
	if int64(buf.Len()-stampRoom) > cfg.MaxMessageBytes {
		return nil, s.refuse("data", errMessageTooLarge(nil))
	}
	return buf.Bytes(), nil
}

// errLineTooLong is the reply to a message with a line over the limit.
// go-smtp counts the lines of DATA itself (reason is its error), but not
// those of BDAT chunks. The MX front hands DATA on as BDAT, so for such a
// transfer the session checks the lines (longestLine), and DATA keeps its
// limit on every port; a client's own BDAT has none, as before.
func errLineTooLong(limit int, reason error) *protocols.Error {
	return protocols.Permanentf(500, [3]int{5, 5, 2}, reason, "Line too long (limit %d bytes)", limit)
}

// longestLine returns the length of msg's longest line, its line ending
// included.
func longestLine(msg []byte) int {
	longest := 0
	for len(msg) > 0 {
		n := bytes.IndexByte(msg, '\n') + 1
		if n == 0 {
			n = len(msg)
		}
		longest = max(longest, n)
		msg = msg[n:]
	}
	return longest
}

// sizeExceededText is the text of every refusal for the message size limit
// (RFC 1870): a declared SIZE too large, a message too large over DATA or
// BDAT. It is go-smtp's own text for the refusals the library makes itself
// (MAIL SIZE= and BDAT beyond Server.MaxMessageBytes), so that a client
// reads one reply whoever noticed.
const sizeExceededText = "Max message size exceeded"

// errMessageTooLarge is the reply to a message, or a declared SIZE, over
// Config.MaxMessageBytes; reason is what detected it, if anything.
func errMessageTooLarge(reason error) *protocols.Error {
	return protocols.Permanentf(552, [3]int{5, 3, 4}, reason, sizeExceededText)
}

// readError maps a failure while reading message data. A timeout or a
// broken connection ends the connection: the client is no longer in step.
func (s *session) readError(err error, conn net.Conn) error {
	cfg := s.srv.cfg
	var ne net.Error
	switch {
	case errors.Is(err, gosmtp.ErrDataTooLarge):
		return s.refuse("data", errMessageTooLarge(err))
	case errors.Is(err, gosmtp.ErrTooLongLine):
		return s.refuse("data", errLineTooLong(cfg.MaxLineLength, err))
	case errors.Is(err, gosmtp.ErrDataReset):
		if f, ok := conn.(*frontConn); ok {
			if e, refused := f.chunkRefusal(); refused {
				// The client sent DATA and go-smtp refused a chunk
				// the front made of it: that is the DATA's reply.
				return s.refuse("data", e)
			}
		}
		s.log.Info("message transfer aborted by client")
		return err
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, errDataTimeout):
		return s.hangUp(conn, protocols.Temporaryf(421, [3]int{4, 4, 2}, err, "Timeout while receiving the message, closing connection"))
	default:
		return s.hangUp(conn, protocols.Temporaryf(421, [3]int{4, 4, 0}, err, "Connection error while receiving the message, closing connection"))
	}
}

// hangUp sends e and closes the connection. It is for failures in the
// middle of message data, after which the client and the server no longer
// agree on where commands start (go-smtp would otherwise read the rest of
// the message as commands). go-smtp's own reply then goes nowhere.
func (s *session) hangUp(conn net.Conn, e *protocols.Error) error {
	s.sendAndClose(conn, toSMTPError(e))
	return s.refuse("data", e)
}

// sendAndClose writes reply on conn behind go-smtp's back and closes conn.
func (s *session) sendAndClose(conn net.Conn, reply *gosmtp.SMTPError) {
	_ = conn.SetWriteDeadline(time.Now().Add(s.srv.cfg.WriteTimeout))
	_, _ = fmt.Fprintf(conn, "%d %d.%d.%d %s\r\n", reply.Code, reply.EnhancedCode[0], reply.EnhancedCode[1], reply.EnhancedCode[2], reply.Message)
	_ = conn.Close()
}

// initialBufferSize picks the first buffer size from the SIZE hint.
func initialBufferSize(hint, max int64) int {
	const small = 64 << 10
	if hint <= 0 {
		return small
	}
	if hint > max {
		hint = max
	}
	return int(hint) + 4096
}

// deadlineReader extends the connection's read deadline before each read:
// the client may pause at most idle between reads, and the whole message
// must arrive before end.
type deadlineReader struct {
	r    io.Reader
	conn net.Conn
	idle time.Duration
	end  time.Time
}

// errDataTimeout reports a message transfer that took longer than
// Config.DataTimeout. For BDAT, go-smtp resets the connection's deadline at
// every chunk, so the total is checked here as well.
var errDataTimeout = errors.New("message transfer exceeded the data timeout")

// Read reads from the message stream under the deadlines.
func (d *deadlineReader) Read(p []byte) (int, error) {
	now := time.Now()
	if !now.Before(d.end) {
		return 0, errDataTimeout
	}
	dl := now.Add(d.idle)
	if dl.After(d.end) {
		dl = d.end
	}
	if err := d.conn.SetReadDeadline(dl); err != nil && !errors.Is(err, net.ErrClosed) {
		return 0, fmt.Errorf("set read deadline: %w", err)
	}
	// On a closed connection the stream still says how the transfer
	// ended: go-smtp may have refused a chunk and reset the transaction
	// (the client heard that refusal and quit) before this goroutine read
	// on, and it ends the stream when the connection goes.
	return d.r.Read(p)
}

// refuse logs why a command failed and returns the client's reply.
// Internal failures are logged with their reason at warning level; the
// reasons of refusals go to debug level only, because store errors about
// an address may quote it.
func (s *session) refuse(op string, e *protocols.Error) error {
	attrs := []any{"op", op, "code", e.Code, "enhanced", fmt.Sprintf("%d.%d.%d", e.Enhanced[0], e.Enhanced[1], e.Enhanced[2])}
	switch {
	case e.Temporary && e.Reason != nil && !isClientFault(e.Reason):
		s.log.Warn("command failed", append(attrs, "reason", e.Reason.Error())...)
	case e.Reason != nil:
		s.log.Info("command refused", attrs...)
		s.log.Debug("command refused", append(attrs, "reason", e.Reason.Error())...)
	default:
		s.log.Info("command refused", attrs...)
	}
	return toSMTPError(e)
}

// isClientFault reports whether a temporary failure came from the client's
// side (timeouts, dropped connections) rather than from the server.
func isClientFault(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, errDataTimeout)
}

// toSMTPError turns a protocol error into go-smtp's reply type.
func toSMTPError(e *protocols.Error) *gosmtp.SMTPError {
	return &gosmtp.SMTPError{Code: e.Code, EnhancedCode: gosmtp.EnhancedCode(e.Enhanced), Message: e.Text}
}

// checkAddress refuses envelope addresses that are too long, contain
// control characters, or are not ASCII without SMTPUTF8 (RFC 6531 section
// 3.5).
func checkAddress(addr string, utf8Mode bool) *protocols.Error {
	if len(addr) > maxAddressLength {
		return protocols.Permanentf(501, [3]int{5, 1, 3}, nil, "Address too long")
	}
	if !utf8.ValidString(addr) {
		return protocols.Permanentf(501, [3]int{5, 1, 3}, nil, "Address is not valid UTF-8")
	}
	for _, r := range addr {
		if r < 0x20 || r == 0x7f {
			return protocols.Permanentf(501, [3]int{5, 1, 3}, nil, "Address contains control characters")
		}
		if r >= 0x80 && !utf8Mode {
			return protocols.Permanentf(553, [3]int{5, 6, 7}, nil, "Non-ASCII address requires SMTPUTF8")
		}
	}
	return nil
}

// ownAddress reports whether from is user's address, compared without
// regard to case, or a sub-address of it ("alice+lists@example.test"),
// which the store delivers to the same mailbox.
func ownAddress(from, user string) bool {
	if strings.EqualFold(from, user) {
		return true
	}
	at := strings.LastIndexByte(from, '@')
	uat := strings.LastIndexByte(user, '@')
	if at < 0 || uat < 0 {
		return false
	}
	local, domain := from[:at], from[at+1:]
	base, _, found := strings.Cut(local, "+")
	return found && base != "" && strings.EqualFold(base, user[:uat]) && strings.EqualFold(domain, user[uat+1:])
}

// tlsNotRequired reports whether a TLS-Required header field says "No"
// (RFC 8689 section 5: the recipient domain's TLS policies are to be
// ignored for this message).
func tlsNotRequired(v string) bool { return strings.EqualFold(strings.TrimSpace(v), "No") }
