package outbound

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/mail"
	"net/textproto"
	"sort"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// maxReportHeader bounds the original header section quoted in a report.
const maxReportHeader = 64 << 10

// report builds a delivery status notification (RFC 3464) about rcpts
// of e for its sender: a failure report, or with delay a notice that
// they are still being retried. It quotes the original message's header
// section only (text/rfc822-headers), never its body. kind identifies
// the report, so that it is stored once.
func (d *Deliverer) report(ctx context.Context, e schema.OutboundEntry, rcpts []schema.OutboundRecipient, delay bool) ([]byte, string, error) {
	msg, err := d.q.OutboundMessage(ctx, e)
	if err != nil {
		return nil, "", err
	}
	now := d.cfg.Now()
	addrs := make([]string, len(rcpts))
	for i, r := range rcpts {
		addrs[i] = r.Address
	}
	sort.Strings(addrs)
	kind := "failure/" + strings.Join(addrs, ",")
	if delay {
		kind = "delay"
	}
	return buildReport(reportInput{
		hostname: d.cfg.Hostname, sender: e.State.Sender, entry: e.ID, created: e.Created, now: now,
		delay: delay, until: e.Created.Add(d.cfg.Expire), rcpts: rcpts, header: originalHeader(msg),
	}), kind, nil
}

type reportInput struct {
	hostname string
	sender   string
	entry    schema.ID
	created  time.Time
	now      time.Time
	delay    bool
	until    time.Time
	rcpts    []schema.OutboundRecipient
	header   []byte
}

// buildReport writes the multipart/report message.
func buildReport(in reportInput) []byte {
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	boundary := "=_report_" + hex.EncodeToString(rnd[:])
	var b bytes.Buffer
	crlf := func(format string, args ...any) { fmt.Fprintf(&b, format+"\r\n", args...) }
	subject := "Undelivered Mail Returned to Sender"
	if in.delay {
		subject = "Delayed Mail (still being retried)"
	}
	crlf("From: Mail Delivery System <MAILER-DAEMON@%s>", in.hostname)
	crlf("To: <%s>", in.sender)
	crlf("Subject: %s", subject)
	crlf("Date: %s", in.now.Format(time.RFC1123Z))
	crlf("Message-ID: <%s.%s@%s>", in.entry, hex.EncodeToString(rnd[:4]), in.hostname)
	crlf("Auto-Submitted: auto-replied") // RFC 3834: no replies to this
	crlf("MIME-Version: 1.0")
	crlf("Content-Type: multipart/report; report-type=delivery-status; boundary=\"%s\"", boundary)
	crlf("")
	crlf("This is a MIME-encapsulated message.")
	crlf("")
	crlf("--%s", boundary)
	crlf("Content-Type: text/plain; charset=utf-8")
	crlf("Content-Transfer-Encoding: 8bit")
	crlf("")
	crlf("This is the mail system at %s.", in.hostname)
	crlf("")
	if in.delay {
		crlf("Your message could not be delivered yet to the recipients below.")
		crlf("It is still being retried until %s; you need not send it again.", in.until.UTC().Format(time.RFC1123Z))
	} else {
		crlf("Your message could not be delivered to the recipients below.")
		crlf("This is a permanent failure: it will not be retried.")
	}
	crlf("")
	for _, r := range in.rcpts {
		crlf("<%s>: %s", r.Address, diagnostic(r))
	}
	crlf("")
	crlf("--%s", boundary)
	crlf("Content-Type: message/delivery-status")
	crlf("")
	crlf("Reporting-MTA: dns; %s", in.hostname)
	crlf("X-Queue-ID: %s", in.entry)
	crlf("Arrival-Date: %s", in.created.Format(time.RFC1123Z))
	for _, r := range in.rcpts {
		crlf("")
		crlf("Final-Recipient: %s", addressType(r.Address))
		action, status := "failed", r.Enhanced
		if in.delay {
			action = "delayed"
		}
		if status == "" || (!in.delay && status[0] != '5') {
			status = defaultStatus(in.delay, r)
		}
		crlf("Action: %s", action)
		crlf("Status: %s", status)
		if r.Remote != "" {
			crlf("Remote-MTA: dns; %s", r.Remote)
		}
		if r.Reply != "" {
			crlf("Diagnostic-Code: smtp; %s", sanitizeReply(r.Reply))
		}
		if !r.Updated.IsZero() {
			crlf("Last-Attempt-Date: %s", r.Updated.Format(time.RFC1123Z))
		}
		if in.delay {
			crlf("Will-Retry-Until: %s", in.until.Format(time.RFC1123Z))
		}
	}
	crlf("")
	crlf("--%s", boundary)
	crlf("Content-Type: text/rfc822-headers")
	crlf("")
	b.Write(in.header)
	if !bytes.HasSuffix(in.header, []byte("\r\n")) {
		crlf("")
	}
	crlf("--%s--", boundary)
	return b.Bytes()
}

// defaultStatus is the DSN status of a recipient whose last answer had
// no usable enhanced code: 4.4.7 for a delay or an expiry in the human
// sense, 5.4.7 for an expiry reported as a failure (RFC 3463).
func defaultStatus(delay bool, r schema.OutboundRecipient) string {
	if delay {
		return "4.4.7"
	}
	if r.Status == schema.RecipientExpired {
		return "5.4.7"
	}
	return "5.0.0"
}

func diagnostic(r schema.OutboundRecipient) string {
	if r.Reply != "" {
		return sanitizeReply(r.Reply)
	}
	return "no answer yet"
}

// addressType writes a Final-Recipient value: rfc822 for ASCII
// addresses, utf-8 (RFC 6533) for others.
func addressType(addr string) string {
	for i := 0; i < len(addr); i++ {
		if addr[i] >= 0x80 {
			return "utf-8; " + addr
		}
	}
	return "rfc822; " + addr
}

// originalHeader returns the header section of msg, bounded.
func originalHeader(msg []byte) []byte {
	h := msg[:schema.HeaderLength(msg)]
	if len(h) > maxReportHeader {
		h = h[:maxReportHeader]
		if i := bytes.LastIndex(h, []byte("\r\n")); i >= 0 {
			h = h[:i+2]
		}
	}
	return bytes.TrimRight(h, "\r\n")
}

// headerFromDomain returns the domain of the first From: address of
// msg ("" when there is none or it does not parse).
func headerFromDomain(msg []byte) string {
	h := msg[:schema.HeaderLength(msg)]
	hdr, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(bytes.Clone(h), "\r\n"...)))).ReadMIMEHeader()
	if err != nil && len(hdr) == 0 {
		return ""
	}
	list, err := mail.ParseAddressList(hdr.Get("From"))
	if err != nil || len(list) == 0 {
		return ""
	}
	return strings.ToLower(domainOf(list[0].Address))
}
