// Package mailauth checks where incoming mail comes from, as a receiving
// MX must: SPF (RFC 7208) for the envelope sender and HELO name, DKIM
// signatures (RFC 6376), and the From domain's DMARC policy (RFC 7489)
// with its alignment rules. The results go into an Authentication-Results
// header field (RFC 8601); DMARC's policy decides whether the message is
// refused, sent to Junk or delivered. Every DNS lookup is bounded in time
// and number; a DNS failure is a temporary result (temperror), never a
// hang.
package mailauth

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/mail"
	"net/netip"
	"net/textproto"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// Resolver is the DNS a Checker asks; *net.Resolver is one.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// Action is what DMARC's policy makes of a message.
type Action int

const (
	// Deliver the message as usual.
	Deliver Action = iota
	// Quarantine sends it to the recipient's Junk mailbox (p=quarantine).
	Quarantine
	// Reject refuses it (p=reject): 550 5.7.1.
	Reject
)

// Checker runs the checks.
type Checker struct {
	// Resolver is the DNS; nil means net.DefaultResolver.
	Resolver Resolver
	// AuthServID names this server in Authentication-Results (the host
	// name); header fields that claim it are removed from incoming mail.
	AuthServID string
	// Timeout bounds all the lookups of one message (default 20 s).
	Timeout time.Duration
}

// maxSignatures bounds the DKIM signatures verified per message.
const maxSignatures = 5

// Result is the outcome of the checks of one message.
type Result struct {
	SPF       authres.ResultValue
	SPFDomain string // the domain SPF was checked for
	DKIM      []DKIMResult
	DMARC     authres.ResultValue
	// Policy is the From domain's DMARC policy ("" without one).
	Policy     dmarc.Policy
	FromDomain string
	Action     Action
	// Header is the Authentication-Results header field, CRLF-terminated.
	Header []byte
}

// DKIMResult is one signature's verification.
type DKIMResult struct {
	Value    authres.ResultValue
	Domain   string
	Selector string
}

// Check checks msg, received from ip after HELO helo with envelope
// sender mailFrom ("" for the null reverse-path).
func (c *Checker) Check(ctx context.Context, ip netip.Addr, helo, mailFrom string, msg []byte) Result {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var res Result
	var r Resolver = net.DefaultResolver
	if c.Resolver != nil {
		r = c.Resolver
	}

	// SPF: the envelope sender's domain, or the HELO name for bounces.
	sender := mailFrom
	if sender == "" {
		sender = "postmaster@" + helo
	}
	_, res.SPFDomain, _ = strings.Cut(sender, "@")
	spfRes, _ := spf.CheckHostWithSender(net.IP(ip.AsSlice()), helo, sender, spf.WithContext(ctx), spf.WithResolver(r))
	res.SPF = spfValue(spfRes)

	// DKIM.
	lookupTXT := func(name string) ([]string, error) { return r.LookupTXT(ctx, name) }
	verifications, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: lookupTXT, MaxVerifications: maxSignatures})
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		verifications = nil
	}
	for _, v := range verifications {
		d := DKIMResult{Value: authres.ResultPass, Domain: v.Domain}
		switch {
		case v.Err == nil:
		case dkim.IsTempFail(v.Err):
			d.Value = authres.ResultTempError
		case dkim.IsPermFail(v.Err):
			// A malformed or unusable signature or key (RFC 8601:
			// permerror); one that does not verify is a fail (below).
			d.Value = authres.ResultPermError
		default:
			d.Value = authres.ResultFail
		}
		res.DKIM = append(res.DKIM, d)
	}

	// DMARC.
	res.FromDomain = fromDomain(msg)
	res.DMARC, res.Policy = c.dmarc(ctx, lookupTXT, &res)
	switch {
	case res.DMARC != authres.ResultFail:
	case res.Policy == dmarc.PolicyReject:
		res.Action = Reject
	case res.Policy == dmarc.PolicyQuarantine:
		res.Action = Quarantine
	}
	res.Header = c.header(&res)
	return res
}

// dmarc evaluates the From domain's policy against the SPF and DKIM
// results, with the record's alignment modes.
func (c *Checker) dmarc(ctx context.Context, lookupTXT func(string) ([]string, error), res *Result) (authres.ResultValue, dmarc.Policy) {
	if res.FromDomain == "" {
		return authres.ResultNone, ""
	}
	org := orgDomain(res.FromDomain)
	rec, err := dmarc.LookupWithOptions(res.FromDomain, &dmarc.LookupOptions{LookupTXT: lookupTXT})
	policy := dmarc.Policy("")
	if errors.Is(err, dmarc.ErrNoPolicy) && org != res.FromDomain {
		rec, err = dmarc.LookupWithOptions(org, &dmarc.LookupOptions{LookupTXT: lookupTXT})
		if err == nil && rec.SubdomainPolicy != "" {
			policy = rec.SubdomainPolicy
		}
	}
	switch {
	case errors.Is(err, dmarc.ErrNoPolicy):
		return authres.ResultNone, ""
	case err != nil && dmarc.IsTempFail(err):
		return authres.ResultTempError, ""
	case err != nil || ctx.Err() != nil:
		if ctx.Err() != nil {
			return authres.ResultTempError, ""
		}
		return authres.ResultPermError, ""
	}
	if policy == "" {
		policy = rec.Policy
	}
	aligned := func(d string, mode dmarc.AlignmentMode) bool {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if mode == dmarc.AlignmentStrict {
			return d == res.FromDomain
		}
		return orgDomain(d) == org
	}
	if res.SPF == authres.ResultPass && aligned(res.SPFDomain, rec.SPFAlignment) {
		return authres.ResultPass, policy
	}
	for _, d := range res.DKIM {
		if d.Value == authres.ResultPass && aligned(d.Domain, rec.DKIMAlignment) {
			return authres.ResultPass, policy
		}
	}
	return authres.ResultFail, policy
}

// header formats the Authentication-Results field.
func (c *Checker) header(res *Result) []byte {
	results := []authres.Result{&authres.SPFResult{Value: res.SPF, From: res.SPFDomain}}
	if len(res.DKIM) == 0 {
		results = append(results, &authres.DKIMResult{Value: authres.ResultNone})
	}
	for _, d := range res.DKIM {
		results = append(results, &authres.DKIMResult{Value: d.Value, Domain: d.Domain})
	}
	dm := &authres.DMARCResult{Value: res.DMARC, From: res.FromDomain}
	if res.Policy != "" {
		dm.Reason = "p=" + string(res.Policy)
	}
	results = append(results, dm)
	return []byte("Authentication-Results: " + authres.Format(c.AuthServID, results) + "\r\n")
}

// StripOurs removes the Authentication-Results fields of msg's header
// that claim to come from authServID (a sender cannot pass its own
// verdicts off as ours, RFC 8601 section 5).
func StripOurs(msg []byte, authServID string) []byte {
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		return msg
	}
	header := msg[:end+2]
	var out bytes.Buffer
	removed := false
	lines := bytes.SplitAfter(header, []byte("\r\n"))
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		field := append([]byte(nil), line...)
		j := i + 1
		for j < len(lines) && len(lines[j]) > 0 && (lines[j][0] == ' ' || lines[j][0] == '\t') {
			field = append(field, lines[j]...)
			j++
		}
		name, value, ok := bytes.Cut(field, []byte(":"))
		if ok && strings.EqualFold(strings.TrimSpace(string(name)), "Authentication-Results") {
			id, _, err := authres.Parse(strings.TrimSpace(string(value)))
			if err == nil && strings.EqualFold(id, authServID) {
				removed = true
				i = j - 1
				continue
			}
		}
		out.Write(field)
		i = j - 1
	}
	if !removed {
		return msg
	}
	out.Write(msg[end+2:])
	return out.Bytes()
}

// fromDomain returns the domain of the message's single From address,
// lower case, or "".
func fromDomain(msg []byte) string {
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(msg)
	}
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(msg[:min(end+4, len(msg))]))).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return ""
	}
	froms := h.Values("From")
	if len(froms) != 1 {
		return ""
	}
	list, err := mail.ParseAddressList(froms[0])
	if err != nil || len(list) != 1 {
		return ""
	}
	_, d, ok := strings.Cut(list[0].Address, "@")
	if !ok {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(d, "."))
}

// orgDomain is a domain's organizational domain (the public suffix plus
// one label).
func orgDomain(d string) string {
	if o, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return o
	}
	return d
}

func spfValue(r spf.Result) authres.ResultValue {
	switch r {
	case spf.Pass:
		return authres.ResultPass
	case spf.Fail:
		return authres.ResultFail
	case spf.SoftFail:
		return authres.ResultSoftFail
	case spf.Neutral:
		return authres.ResultNeutral
	case spf.TempError:
		return authres.ResultTempError
	case spf.PermError:
		return authres.ResultPermError
	default:
		return authres.ResultNone
	}
}

// String describes an action for logs.
func (a Action) String() string {
	switch a {
	case Quarantine:
		return "quarantine"
	case Reject:
		return "reject"
	default:
		return "deliver"
	}
}
