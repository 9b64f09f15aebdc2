package imap

import (
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// maxEnvelopeAddresses bounds the addresses (group markers included) of
// one ENVELOPE address list; a header field with more is cut short (and
// an open group still closed, so a list may have two entries more).
const maxEnvelopeAddresses = 1000

// envelopeOfHeader builds the ENVELOPE of a parsed header. The library
// supplies the date, subject and message ids; the address lists are ours,
// because the library drops groups (RFC 5322 section 3.4) where RFC 3501
// section 7.4.2 keeps them as group markers.
func envelopeOfHeader(h textproto.Header) *imap.Envelope {
	env, _ := parseEnvelope(h)
	return env
}

// routedEnvelopeOf parses the header section at the start of msg into an
// ENVELOPE, with the obs-routes of its addresses. A malformed header
// yields what could be parsed.
func routedEnvelopeOf(msg []byte) (*imap.Envelope, []envelopeRoute) {
	h, _ := parseHeaderSection(msg)
	return parseEnvelope(h)
}

// parseEnvelope builds the ENVELOPE of a parsed header, and lists the
// obs-routes of its addresses (nil when none has one).
func parseEnvelope(h textproto.Header) (*imap.Envelope, []envelopeRoute) {
	env := imapserver.ExtractEnvelope(h)
	var routes []envelopeRoute
	for f, field := range envelopeFields {
		*field.list(env) = routedAddresses(h.Get(field.name), f, &routes)
	}
	return env, routes
}

// envelopeRoute is the obs-route of one ENVELOPE address (RFC 5322
// section 4.4, "<@relay1,@relay2:user@host>"), which RFC 3501 section
// 7.4.2 answers as the address's at-domain-list ("@relay1,@relay2") and
// imap.Address has no field for: the front writes it (envroute.go).
type envelopeRoute struct {
	field int // an index into envelopeFields
	index int // the address's index in the field's list
	adl   string
}

// envelopeFields are an ENVELOPE's address lists and the header fields
// they come from.
var envelopeFields = [...]struct {
	name string
	list func(*imap.Envelope) *[]imap.Address
}{
	{"From", func(e *imap.Envelope) *[]imap.Address { return &e.From }},
	{"Sender", func(e *imap.Envelope) *[]imap.Address { return &e.Sender }},
	{"Reply-To", func(e *imap.Envelope) *[]imap.Address { return &e.ReplyTo }},
	{"To", func(e *imap.Envelope) *[]imap.Address { return &e.To }},
	{"Cc", func(e *imap.Envelope) *[]imap.Address { return &e.Cc }},
	{"Bcc", func(e *imap.Envelope) *[]imap.Address { return &e.Bcc }},
}

// envelopeAddresses parses an address-list field value into ENVELOPE
// addresses. A group ("team: a@b, c@d;", "undisclosed-recipients:;")
// becomes a start marker (NIL NIL "team" NIL), its members, and an end
// marker (NIL NIL NIL NIL), as RFC 3501 section 7.4.2 specifies. Members
// that do not parse as a mailbox are left out; a group without its ";"
// is closed at the end of the field.
func envelopeAddresses(value string) []imap.Address {
	return routedAddresses(value, 0, nil)
}

// routedAddresses is envelopeAddresses that appends the routes of the
// addresses to *routes, as those of field f, unless routes is nil.
func routedAddresses(value string, f int, routes *[]envelopeRoute) []imap.Address {
	var out []imap.Address
	inGroup := false
	for _, item := range splitAddressList(value) {
		if len(out) >= maxEnvelopeAddresses {
			break
		}
		switch item.kind {
		case itemGroupStart:
			if inGroup {
				out = append(out, imap.Address{})
			}
			name := groupName(item.text)
			if name == "" {
				// An empty marker would read as a group end.
				name = "group"
			}
			out = append(out, imap.Address{Mailbox: name})
			inGroup = true
		case itemGroupEnd:
			if inGroup {
				out = append(out, imap.Address{})
				inGroup = false
			}
		case itemMailbox:
			if a, adl, ok := routedMailbox(item.text); ok {
				if adl != "" && routes != nil {
					*routes = append(*routes, envelopeRoute{field: f, index: len(out), adl: adl})
				}
				out = append(out, a)
			}
		}
	}
	if inGroup {
		out = append(out, imap.Address{})
	}
	return out
}

// envelopeMailbox parses one mailbox ("Name <local@domain>",
// "local@domain") into an ENVELOPE address.
func envelopeMailbox(s string) (imap.Address, bool) {
	a, _, ok := routedMailbox(s)
	return a, ok
}

// routedMailbox is envelopeMailbox that also returns the mailbox's
// obs-route as an at-domain-list ("@relay1,@relay2"), "" when it has
// none.
func routedMailbox(s string) (imap.Address, string, bool) {
	s = unfold.Replace(s)
	if strings.TrimSpace(s) == "" {
		return imap.Address{}, "", false
	}
	adl := ""
	a, err := mail.ParseAddress(s)
	if err != nil {
		// net/mail refuses comments and white space inside an addr-spec
		// ("<user (c)@ (c) host>"), which RFC 5322 allows as CFWS, and
		// the obs-route of RFC 5322 section 4.4 ("<@relay:user@host>").
		var stripped string
		stripped, adl = splitObsRoute(stripCFWS(s))
		if a, err = mail.ParseAddress(stripped); err != nil {
			a, ok := withoutDomain(s)
			return a, "", ok
		}
	}
	at := strings.LastIndexByte(a.Address, '@')
	if at <= 0 || at == len(a.Address)-1 {
		return imap.Address{}, "", false
	}
	return imap.Address{Name: a.Name, Mailbox: a.Address[:at], Host: a.Address[at+1:]}, adl, true
}

// missingDomain is the host of an address written without a domain
// ("From: d", "Name <d>"), as Dovecot fills it in: a NIL host would make
// the address a group marker (RFC 3501 section 7.4.2), and dropping the
// address would lose its mailbox, which SORT takes as the FROM, TO or CC
// key (RFC 5256 section 3).
const missingDomain = "MISSING_DOMAIN"

// withoutDomain parses a mailbox whose addr-spec is a local part alone,
// with missingDomain as its host.
func withoutDomain(s string) (imap.Address, bool) {
	s = strings.TrimSpace(stripCFWS(s))
	candidate := s + "@" + missingDomain
	if open := strings.LastIndexByte(s, '<'); open >= 0 {
		end := strings.LastIndexByte(s, '>')
		if end < open || strings.TrimSpace(s[open+1:end]) == "" || strings.Contains(s[open+1:end], "@") {
			return imap.Address{}, false
		}
		candidate = s[:end] + "@" + missingDomain + s[end:]
	} else if s == "" || strings.Contains(s, "@") {
		return imap.Address{}, false
	}
	a, err := mail.ParseAddress(candidate)
	if err != nil {
		return imap.Address{}, false
	}
	at := strings.LastIndexByte(a.Address, '@')
	if at <= 0 {
		return imap.Address{}, false
	}
	return imap.Address{Name: a.Name, Mailbox: a.Address[:at], Host: missingDomain}, true
}

// splitObsRoute takes the obs-route ("@relay1,@relay2:") off the start
// of an angle-addr (RFC 5322 section 4.4): "<@relay:user@host>" becomes
// "<user@host>", and the route is returned as an at-domain-list without
// its white space ("@relay"), "" when there is none.
func splitObsRoute(s string) (string, string) {
	open := strings.LastIndexByte(s, '<')
	if open < 0 {
		return s, ""
	}
	rest := strings.TrimLeft(s[open+1:], " \t")
	if !strings.HasPrefix(rest, "@") {
		return s, ""
	}
	colon := strings.IndexByte(rest, ':')
	if end := strings.IndexByte(rest, '>'); colon < 0 || end >= 0 && colon > end {
		return s, ""
	}
	adl := strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, rest[:colon])
	return s[:open+1] + rest[colon+1:], adl
}

// unfold removes the line breaks of a folded field value (RFC 5322
// section 2.2.3).
var unfold = strings.NewReplacer("\r\n", "", "\r", "", "\n", "")

// stripCFWS removes the comments of a mailbox and the white space around
// its "@", outside quoted strings.
func stripCFWS(s string) string {
	var sb strings.Builder
	quoted := false
	comment := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted:
			sb.WriteByte(c)
			if c == '\\' && i+1 < len(s) {
				i++
				sb.WriteByte(s[i])
			} else if c == '"' {
				quoted = false
			}
		case comment > 0:
			if c == '\\' {
				i++
			} else if c == '(' {
				comment++
			} else if c == ')' {
				comment--
			}
		case c == '"':
			quoted = true
			sb.WriteByte(c)
		case c == '(':
			comment = 1
		case c == '@':
			out := strings.TrimRight(sb.String(), " \t")
			sb.Reset()
			sb.WriteString(out)
			sb.WriteByte('@')
			for i+1 < len(s) && (s[i+1] == ' ' || s[i+1] == '\t') {
				i++
			}
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

type addressItemKind int

const (
	itemMailbox addressItemKind = iota
	itemGroupStart
	itemGroupEnd
)

// addressItem is one piece of an address list: a mailbox, the phrase
// that starts a group, or the end of a group.
type addressItem struct {
	kind addressItemKind
	text string
}

// splitAddressList cuts an address list at its top-level commas, group
// colons and group semicolons; quoted strings, comments, angle-addresses
// and domain literals are kept whole. It never fails: unbalanced
// delimiters run to the end of the value.
func splitAddressList(v string) []addressItem {
	var items []addressItem
	start := 0
	inGroup := false
	var quoted, angle, literal bool
	comment := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case quoted:
			if c == '\\' {
				i++
			} else if c == '"' {
				quoted = false
			}
			continue
		case comment > 0:
			if c == '\\' {
				i++
			} else if c == '(' {
				comment++
			} else if c == ')' {
				comment--
			}
			continue
		case literal:
			if c == '\\' {
				i++
			} else if c == ']' {
				literal = false
			}
			continue
		case angle:
			if c == '"' {
				quoted = true
			} else if c == '>' {
				angle = false
			}
			continue
		}
		switch c {
		case '"':
			quoted = true
		case '(':
			comment = 1
		case '[':
			literal = true
		case '<':
			angle = true
		case ':':
			if !inGroup {
				items = append(items, addressItem{kind: itemGroupStart, text: v[start:i]})
				inGroup = true
				start = i + 1
			}
		case ',':
			items = append(items, addressItem{kind: itemMailbox, text: v[start:i]})
			start = i + 1
		case ';':
			items = append(items, addressItem{kind: itemMailbox, text: v[start:i]})
			if inGroup {
				items = append(items, addressItem{kind: itemGroupEnd})
				inGroup = false
			}
			start = i + 1
		}
	}
	if start < len(v) {
		items = append(items, addressItem{kind: itemMailbox, text: v[start:]})
	}
	return items
}

// groupName is a group's display name: the phrase without comments, with
// quoted strings unquoted and runs of white space made one space.
func groupName(phrase string) string {
	var sb strings.Builder
	comment := 0
	quoted := false
	space := false
	put := func(c byte) {
		if space && sb.Len() > 0 {
			sb.WriteByte(' ')
		}
		space = false
		sb.WriteByte(c)
	}
	for i := 0; i < len(phrase); i++ {
		c := phrase[i]
		switch {
		case quoted:
			if c == '\\' && i+1 < len(phrase) {
				i++
				put(phrase[i])
			} else if c == '"' {
				quoted = false
			} else {
				put(c)
			}
		case comment > 0:
			if c == '\\' {
				i++
			} else if c == '(' {
				comment++
			} else if c == ')' {
				comment--
			}
		case c == '"':
			quoted = true
		case c == '(':
			comment = 1
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			space = true
		default:
			put(c)
		}
	}
	return sb.String()
}
