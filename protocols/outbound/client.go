package outbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// failure is a result that applies to every recipient of a destination
// (no route, no connection, a refused sender, a refused message).
type failure struct {
	permanent bool
	code      int
	enhanced  string
	text      string
	remote    string
}

func (f failure) results(rcpts []string) []rcptResult {
	st := schema.RecipientQueued
	if f.permanent {
		st = schema.RecipientFailed
	}
	out := make([]rcptResult, len(rcpts))
	for i, r := range rcpts {
		out[i] = rcptResult{addr: r, status: st, code: f.code, enhanced: f.enhanced, reply: f.text, remote: f.remote}
	}
	return out
}

func temporary(code int, enhanced, format string, args ...any) *failure {
	return &failure{code: code, enhanced: enhanced, text: fmt.Sprintf(format, args...)}
}

func permanent(code int, enhanced, format string, args ...any) *failure {
	return &failure{permanent: true, code: code, enhanced: enhanced, text: fmt.Sprintf(format, args...)}
}

// route returns the hosts to try for a domain, best first: its MX hosts,
// or the domain itself when it has no MX but has addresses (RFC 5321
// section 5.1). A null MX (RFC 7505) and a domain that does not exist
// are permanent failures; a DNS failure is a temporary one.
func (d *Deliverer) route(ctx context.Context, dom string) ([]string, *failure) {
	mxs, err := d.cfg.Resolver.LookupMX(ctx, dom)
	var dnsErr *net.DNSError
	notFound := errors.As(err, &dnsErr) && dnsErr.IsNotFound
	if err != nil && !notFound {
		return nil, temporary(451, "4.4.3", "DNS lookup of the MX of %s failed", dom)
	}
	if len(mxs) > 0 {
		var hosts []string
		for _, mx := range mxs {
			if mx.Host == "." || mx.Host == "" {
				continue
			}
			hosts = append(hosts, strings.TrimSuffix(mx.Host, "."))
		}
		if len(hosts) == 0 {
			// RFC 7505 section 4.1.
			return nil, permanent(556, "5.1.10", "Domain %s does not accept mail (null MX)", dom)
		}
		return hosts, nil
	}
	addrs, err := d.cfg.Resolver.LookupIPAddr(ctx, dom)
	switch {
	case err == nil && len(addrs) > 0:
		return []string{dom}, nil
	case err == nil || (errors.As(err, &dnsErr) && dnsErr.IsNotFound):
		return nil, permanent(550, "5.1.2", "Domain %s has no MX and no address records", dom)
	default:
		return nil, temporary(451, "4.4.3", "DNS lookup of the addresses of %s failed", dom)
	}
}

// outgoing is a message ready to send, and what a conversion for a
// server without 8BITMIME needs: the message before signing, and the
// signer for the converted form (a signature covers the body as sent).
type outgoing struct {
	signed []byte
	raw    []byte
	sign   func([]byte) []byte
}

// unsigned is msg as an outgoing message without a signer.
func unsigned(msg []byte) outgoing {
	return outgoing{signed: msg, raw: msg, sign: func(b []byte) []byte { return b }}
}

// sendDomain delivers msg to the recipients of one domain: to its hosts
// in order until one answers (RFC 5321 section 5.1).
func (d *Deliverer) sendDomain(ctx context.Context, log *slog.Logger, dom string, st schema.OutboundState, rcpts []string, msg outgoing) []rcptResult {
	hosts, f := d.route(ctx, dom)
	if f != nil {
		log.Info("no route to destination", "code", f.code, "enhanced", f.enhanced)
		log.Debug("no route to destination", "domain", dom, "reason", f.text)
		return f.results(rcpts)
	}
	last := temporary(451, "4.4.1", "No answer from any host of %s", dom)
	for _, host := range hosts {
		res, f := d.sendHost(ctx, log, dom, host, st, rcpts, msg)
		if f == nil {
			return res
		}
		last = f
		if ctx.Err() != nil {
			break
		}
	}
	if st.RequireTLS && ctx.Err() == nil && strings.HasPrefix(last.enhanced, "4.7.") {
		// RFC 8689 section 4.2.1: no host could take the message over
		// verified TLS with REQUIRETLS; it is returned, not retried.
		f := permanent(550, "5.7.10", "REQUIRETLS: %s", last.text)
		f.remote = last.remote
		log.Info("REQUIRETLS message returned", "code", f.code, "enhanced", f.enhanced)
		return f.results(rcpts)
	}
	return last.results(rcpts)
}

// policyFor is the TLS policy of one connection for a message: the
// recipient domain's (TLSPolicy) unless the message said "TLS-Required:
// No", tightened to verified TLS by REQUIRETLS and by the operator's
// RequireTLS.
func (d *Deliverer) policyFor(ctx context.Context, dom, host string, st schema.OutboundState) TLSPolicy {
	var p TLSPolicy
	if !st.TLSOptional {
		p = d.cfg.TLSPolicy(ctx, dom, host)
	}
	switch {
	case st.RequireTLS:
		p.Require, p.Verify, p.Check, p.Reason = true, true, false, ReasonREQUIRETLS
	case d.cfg.RequireTLS:
		p.Require, p.Verify, p.Check, p.Reason = true, true, false, ReasonRequireTLS
	}
	return p
}

// sendHost runs one SMTP transaction with host. A failure returned
// means this host did not take responsibility for anyone and the next
// host may be tried.
func (d *Deliverer) sendHost(ctx context.Context, log *slog.Logger, dom, host string, st schema.OutboundState, rcpts []string, out outgoing) ([]rcptResult, *failure) {
	msg := out.signed
	policy := d.policyFor(ctx, dom, host, st)
	if policy.Refuse != "" {
		// RFC 8461 section 5: an MX the policy does not allow is not
		// used; the recipients wait for one it allows.
		return nil, &failure{code: 451, enhanced: "4.7.5", text: fmt.Sprintf("%s not used: %s", host, sanitizeReply(policy.Refuse)), remote: host}
	}
	conn, f := d.dialTLS(ctx, dom, host, policy, true)
	if f != nil && f.code == errTLSCode && !policy.Require && !policy.Verify {
		// RFC 7435: opportunistic TLS that fails falls back to
		// cleartext rather than not delivering.
		log.Info("TLS with the destination failed; sending in cleartext", "host", host, "reason", f.text)
		conn, f = d.dialTLS(ctx, dom, host, policy, false)
	}
	if f != nil {
		f.remote = host
		return nil, f
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	dc := &dataConn{Conn: conn}
	c := gosmtp.NewClient(dc)
	c.CommandTimeout = d.cfg.CommandTimeout
	c.SubmissionTimeout = d.cfg.DataTimeout
	defer c.Close()
	if err := c.Hello(d.cfg.Hostname); err != nil {
		return nil, replyFailure(err, host, "EHLO")
	}
	if st.RequireTLS {
		if ok, _ := c.Extension("REQUIRETLS"); !ok {
			// RFC 8689 section 4.2.1: only to a host that supports
			// REQUIRETLS; another MX may.
			_ = c.Quit()
			return nil, &failure{code: 450, enhanced: "4.7.10", text: fmt.Sprintf("%s does not support REQUIRETLS, which this message requires", host), remote: host}
		}
	}
	if st.UTF8 {
		if ok, _ := c.Extension("SMTPUTF8"); !ok {
			// RFC 6531 section 3.2: no downgrade of addresses.
			return permanentAll(rcpts, 553, "5.6.7", "The destination does not support SMTPUTF8, which this message needs", host), nil
		}
	}
	if st.EightBit {
		ok8, _ := c.Extension("8BITMIME")
		okUTF8, _ := c.Extension("SMTPUTF8")
		if !ok8 && !okUTF8 {
			// RFC 6152 section 3: 8-bit data only to a server that takes
			// it; convert the message to 7-bit, or return it.
			converted, err := sevenBit(out.raw, 0)
			if err != nil {
				return permanentAll(rcpts, 554, "5.6.3", "The destination does not accept 8-bit data (8BITMIME), and this message cannot be converted", host), nil
			}
			msg = out.sign(converted)
		}
	}
	if strings.ContainsAny(st.From, "\r\n") {
		return permanentAll(rcpts, 553, "5.1.7", "The sender address cannot be sent", host), nil
	}
	// go-smtp's client said EHLO; the transaction is ours (pipeline.go).
	pipelining, _ := c.Extension("PIPELINING")
	sc := newSMTPConn(dc, d.cfg.CommandTimeout)
	rep, err := sc.envelope(mailCommand(c, st.From, len(msg), st.RequireTLS, st.UTF8), rcpts, pipelining)
	if err != nil {
		return nil, replyFailure(err, host, "the envelope")
	}
	if rep.mail != nil {
		f := replyFailure(rep.mail, host, "MAIL")
		if f.permanent {
			return f.results(rcpts), nil // a refusal of the sender, not of this host
		}
		return nil, f
	}
	results := make([]rcptResult, 0, len(rcpts))
	var accepted []string
	for i, r := range rcpts {
		if se := rep.rcpt[i]; se != nil {
			results = append(results, smtpResult(r, se, host))
			continue
		}
		accepted = append(accepted, r)
	}
	if len(accepted) == 0 {
		sc.quit()
		return results, nil
	}
	if rep.data != nil {
		f := replyFailure(rep.data, host, "DATA")
		return append(results, f.results(accepted)...), nil
	}
	dc.block.Store(int64(d.cfg.DataBlockTimeout))
	w := sc.text.DotWriter()
	_, err = w.Write(msg)
	if err == nil {
		// Close writes the final dot.
		err = w.Close()
	}
	dc.block.Store(0)
	if err != nil {
		if isTimeout(err) {
			f := temporary(451, "4.4.2", "%s stopped taking the message text (no progress for %s)", host, d.cfg.DataBlockTimeout)
			f.remote = host
			return nil, f
		}
		return nil, temporary(451, "4.4.2", "Connection to %s lost while sending the message", host)
	}
	status, se, err := sc.replyStatus(d.cfg.DataTimeout)
	if err != nil {
		if isTimeout(err) {
			// The message may have arrived: it is sent again later
			// (RFC 5321 section 6.1 accepts that duplicate).
			f := temporary(451, "4.4.2", "No reply from %s within %s after the message was sent", host, d.cfg.DataTimeout)
			f.remote = host
			return nil, f
		}
		// No answer after the final dot: whether the message arrived
		// is unknown; it is sent again later (RFC 5321 section 6.1
		// accepts that duplicate).
		return nil, temporary(451, "4.4.2", "Connection to %s lost after the message was sent", host)
	}
	if se != nil {
		return append(results, smtpResultAll(accepted, se, host)...), nil
	}
	sc.quit()
	reply := "250 " + sanitizeReply(status)
	for _, r := range accepted {
		results = append(results, rcptResult{addr: r, status: schema.RecipientDelivered, code: 250, enhanced: "2.0.0", reply: reply, remote: host})
	}
	log.Info("delivered", "host", host, "recipients", len(accepted), "refused", len(results)-len(accepted), "pipelining", pipelining)
	return results, nil
}

func permanentAll(rcpts []string, code int, enhanced, text, host string) []rcptResult {
	f := permanent(code, enhanced, "%s", text)
	f.remote = host
	return f.results(rcpts)
}

// errTLSCode marks a failure of STARTTLS or its handshake.
const errTLSCode = 454

// dialTLS connects to host, reads its greeting and, when useTLS and the
// host offers STARTTLS, starts TLS. It returns a connection on which
// go-smtp's client then runs, with the greeting replayed to it (go-smtp
// cannot start TLS on a client whose EHLO we sent ourselves).
func (d *Deliverer) dialTLS(ctx context.Context, dom, host string, policy TLSPolicy, useTLS bool) (net.Conn, *failure) {
	conn, err := d.cfg.Dial(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(d.cfg.Port)))
	if err != nil {
		return nil, temporary(451, "4.4.1", "Connection to %s failed: %s", host, sanitizeReply(err.Error()))
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_ = conn.SetDeadline(time.Now().Add(d.cfg.CommandTimeout))
	tp := textproto.NewConn(conn)
	code, greeting, err := tp.ReadResponse(220)
	if err != nil {
		conn.Close()
		return nil, protocolFailure(err, code, host, "greeting")
	}
	replay := "220 " + firstLine(greeting) + "\r\n"
	if !useTLS && !policy.Require {
		_ = conn.SetDeadline(time.Time{})
		return &greetedConn{Conn: conn, pre: strings.NewReader(replay)}, nil
	}
	id, err := tp.Cmd("EHLO %s", d.cfg.Hostname)
	if err != nil {
		conn.Close()
		return nil, temporary(451, "4.4.2", "Connection to %s lost", host)
	}
	tp.StartResponse(id)
	code, ehlo, err := tp.ReadResponse(250)
	tp.EndResponse(id)
	offered := false
	if err == nil {
		for _, l := range strings.Split(ehlo, "\n") {
			if strings.EqualFold(strings.TrimSpace(l), "STARTTLS") {
				offered = true
			}
		}
	} else if _, ok := err.(*textproto.Error); !ok {
		conn.Close()
		return nil, temporary(451, "4.4.2", "Connection to %s lost", host)
	}
	if !offered {
		d.reportTLS(dom, host, policy, TLSResult{Failure: ResultSTARTTLSNotSupported})
		if policy.Require {
			conn.Close()
			return nil, temporary(errTLSCode, "4.7.10", "%s does not offer STARTTLS, which the policy requires", host)
		}
		_ = conn.SetDeadline(time.Time{})
		return &greetedConn{Conn: conn, pre: strings.NewReader(replay)}, nil
	}
	id, err = tp.Cmd("STARTTLS")
	if err == nil {
		tp.StartResponse(id)
		code, _, err = tp.ReadResponse(220)
		tp.EndResponse(id)
	}
	if err != nil || tp.R.Buffered() > 0 {
		// Data after the 220 would be read as if it came over TLS
		// (the STARTTLS command injection of CVE-2011-0411).
		conn.Close()
		return nil, temporary(errTLSCode, "4.7.0", "STARTTLS refused by %s (%d)", host, code)
	}
	var checkErr error
	tc := tls.Client(conn, tlsConfig(host, policy, d.cfg.RootCAs, func(err error) { checkErr = err }))
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		res := TLSResult{Failure: ResultValidationFailure, Detail: sanitizeReply(err.Error())}
		var ve *tls.CertificateVerificationError
		if errors.As(err, &ve) {
			res.Failure = certFailure(ve.Err)
		}
		d.reportTLS(dom, host, policy, res)
		return nil, temporary(errTLSCode, "4.7.0", "TLS handshake with %s failed: %s", host, sanitizeReply(err.Error()))
	}
	if checkErr != nil {
		d.reportTLS(dom, host, policy, TLSResult{Failure: certFailure(checkErr), Detail: sanitizeReply(checkErr.Error())})
	} else {
		d.reportTLS(dom, host, policy, TLSResult{})
	}
	_ = conn.SetDeadline(time.Time{})
	return &greetedConn{Conn: tc, pre: strings.NewReader(replay)}, nil
}

// reportTLS tells Config.OnTLS the TLS outcome of a connection.
func (d *Deliverer) reportTLS(dom, host string, policy TLSPolicy, r TLSResult) {
	if d.cfg.OnTLS != nil {
		d.cfg.OnTLS(dom, host, policy, r)
	}
}

// greetedConn replays the greeting already read to go-smtp's client,
// which reads one before its EHLO.
type greetedConn struct {
	net.Conn
	pre *strings.Reader
}

// dataConn bounds each write while the message text is sent: go-smtp
// sets deadlines for commands and for the reply to the final dot, but
// none while the text itself is written, so a server that stops reading
// mid-DATA would hold the attempt until AttemptTimeout.
type dataConn struct {
	net.Conn
	block atomic.Int64 // a time.Duration; 0 outside the message text
}

// Write sets the write deadline of the data block timeout first, while
// one is on.
func (c *dataConn) Write(p []byte) (int, error) {
	if b := time.Duration(c.block.Load()); b > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(b))
	}
	return c.Conn.Write(p)
}

// isTimeout reports whether err is a deadline that ran out.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// Read returns the replayed greeting first.
func (g *greetedConn) Read(p []byte) (int, error) {
	if g.pre.Len() > 0 {
		return g.pre.Read(p)
	}
	return g.Conn.Read(p)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return sanitizeReply(l)
}

// protocolFailure maps a refused greeting or a lost connection.
func protocolFailure(err error, code int, host, stage string) *failure {
	var te *textproto.Error
	if errors.As(err, &te) {
		f := &failure{permanent: te.Code >= 500, code: te.Code, enhanced: enhancedOf(te.Code, te.Msg), text: fmt.Sprintf("%s answered %s with: %d %s", host, stage, te.Code, sanitizeReply(te.Msg)), remote: host}
		return f
	}
	return temporary(451, "4.4.2", "Connection to %s lost at %s", host, stage)
}

// replyFailure maps an error of a command that concerns the whole
// transaction.
func replyFailure(err error, host, stage string) *failure {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		text := fmt.Sprintf("%s answered %s with: %d %s", host, stage, se.Code, sanitizeReply(se.Message))
		return &failure{permanent: se.Code >= 500, code: se.Code, enhanced: enhancedString(se), text: text, remote: host}
	}
	return temporary(451, "4.4.2", "Connection to %s lost at %s", host, stage)
}

// smtpResult is one recipient's result from a reply.
func smtpResult(rcpt string, se *gosmtp.SMTPError, host string) rcptResult {
	st := schema.RecipientQueued
	if se.Code >= 500 {
		st = schema.RecipientFailed
	}
	return rcptResult{addr: rcpt, status: st, code: se.Code, enhanced: enhancedString(se),
		reply: fmt.Sprintf("%d %s", se.Code, sanitizeReply(se.Message)), remote: host}
}

func smtpResultAll(rcpts []string, se *gosmtp.SMTPError, host string) []rcptResult {
	out := make([]rcptResult, len(rcpts))
	for i, r := range rcpts {
		out[i] = smtpResult(r, se, host)
	}
	return out
}

// enhancedString returns a reply's enhanced status code, or the class
// default when the server sent none.
func enhancedString(se *gosmtp.SMTPError) string {
	e := se.EnhancedCode
	if e[0] == 2 || e[0] == 4 || e[0] == 5 {
		return fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2])
	}
	return enhancedOf(se.Code, "")
}

// enhancedOf derives an enhanced status code from a reply: the one it
// starts with, else the class default.
func enhancedOf(code int, msg string) string {
	if f := strings.Fields(msg); len(f) > 0 {
		p := strings.Split(f[0], ".")
		if len(p) == 3 && (p[0] == "2" || p[0] == "4" || p[0] == "5") {
			if _, err := strconv.Atoi(p[1]); err == nil {
				if _, err := strconv.Atoi(p[2]); err == nil {
					return f[0]
				}
			}
		}
	}
	return fmt.Sprintf("%d.0.0", code/100)
}

// maxReply bounds the remote text kept per recipient.
const maxReply = 400

// sanitizeReply keeps a remote reply printable ASCII and bounded.
func sanitizeReply(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= maxReply {
			break
		}
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			b.WriteByte(' ')
		case r >= 0x20 && r < 0x7f:
			b.WriteRune(r)
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}
