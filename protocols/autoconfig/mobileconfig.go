package autoconfig

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// An Apple configuration profile: a property list (plist) whose payload
// of type com.apple.mail.managed sets up one mail account in Apple Mail
// on iOS, iPadOS and macOS. The profile is not signed; the device shows
// it as unverified before the user installs it.

// ContentTypeMobileconfig is the media type of a configuration profile.
const ContentTypeMobileconfig = "application/x-apple-aspen-config"

// plistDict is a plist <dict>: keys and values in order. A value is a
// string, an int, a bool, a plistDict or a []plistDict.
type plistDict []plistEntry

type plistEntry struct {
	key   string
	value any
}

// mobileconfig returns the profile for an address, or false when no
// incoming or no outgoing service is advertised. The incoming server is
// IMAP when offered, else POP3.
func (c Config) mobileconfig(addr, domain string) (plistDict, bool) {
	var in, out []service
	if in = c.offered(kindIMAP); len(in) == 0 {
		in = c.offered(kindPOP3)
	}
	out = c.offered(kindSMTP)
	if len(in) == 0 || len(out) == 0 {
		return nil, false
	}
	accountType := "EmailTypeIMAP"
	if in[0].kind == kindPOP3 {
		accountType = "EmailTypePOP"
	}
	// Identifiers are stable for one host and address, so installing
	// the profile again replaces the account rather than adding one.
	id := reverseDNS(c.Host) + ".mailaccount." + digest(c.Host, addr)[:16]
	account := plistDict{
		{"EmailAccountDescription", addr},
		{"EmailAccountType", accountType},
		{"EmailAddress", addr},
		{"IncomingMailServerAuthentication", "EmailAuthPassword"},
		{"IncomingMailServerHostName", c.Host},
		{"IncomingMailServerPortNumber", in[0].port},
		// UseSSL means TLS: implicit on the TLS ports, STARTTLS on the
		// others.
		{"IncomingMailServerUseSSL", true},
		{"IncomingMailServerUsername", addr},
		{"OutgoingMailServerAuthentication", "EmailAuthPassword"},
		{"OutgoingMailServerHostName", c.Host},
		{"OutgoingMailServerPortNumber", out[0].port},
		{"OutgoingMailServerUseSSL", true},
		{"OutgoingMailServerUsername", addr},
		{"OutgoingPasswordSameAsIncomingPassword", true},
		{"PayloadDescription", "Mail account " + addr},
		{"PayloadDisplayName", addr},
		{"PayloadIdentifier", id + ".account"},
		{"PayloadType", "com.apple.mail.managed"},
		{"PayloadUUID", uuidOf("account", c.Host, addr)},
		{"PayloadVersion", 1},
	}
	return plistDict{
		{"PayloadContent", []plistDict{account}},
		{"PayloadDescription", "Sets up the mail account " + addr + " (" + strings.ToUpper(in[0].kind) + " and SMTP on " + c.Host + ")."},
		{"PayloadDisplayName", domain + " mail"},
		{"PayloadIdentifier", id},
		{"PayloadOrganization", domain},
		{"PayloadRemovalDisallowed", false},
		{"PayloadType", "Configuration"},
		{"PayloadUUID", uuidOf("profile", c.Host, addr)},
		{"PayloadVersion", 1},
	}, true
}

// serveMobileconfig answers GET /apple/mobileconfig?emailaddress=ADDR
// with a profile to download.
func (h *Handler) serveMobileconfig(w http.ResponseWriter, r *http.Request) {
	raw := queryAddress(w, r)
	if raw == "" {
		return
	}
	addr, domain, ok := h.account(w, r, "mobileconfig", raw)
	if !ok {
		return
	}
	profile, ok := h.cfg.mobileconfig(addr, domain)
	if !ok {
		httpError(w, http.StatusNotFound, "no incoming or outgoing mail service is advertised")
		return
	}
	var buf bytes.Buffer
	if err := encodePlist(&buf, profile); err != nil {
		h.log.Error("mobileconfig: encode", "err", err)
		httpError(w, http.StatusInternalServerError, "internal error")
		return
	}
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": domain + ".mobileconfig"}))
	write(w, ContentTypeMobileconfig, &buf)
}

// plistDoctype is the document type declaration of an XML plist.
const plistDoctype = `DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd"`

// encodePlist writes d as an XML property list, indented with tabs as
// Apple's tools write it. Every key and string goes through
// xml.EscapeText.
func encodePlist(buf *bytes.Buffer, d plistDict) error {
	buf.WriteString(xml.Header)
	buf.WriteString("<!" + plistDoctype + ">\n<plist version=\"1.0\">\n")
	if err := writePlistValue(buf, d, 0); err != nil {
		return err
	}
	buf.WriteString("</plist>\n")
	return nil
}

func writePlistValue(buf *bytes.Buffer, v any, depth int) error {
	indent := strings.Repeat("\t", depth)
	text := func(indent, elem, s string) error {
		buf.WriteString(indent + "<" + elem + ">")
		if err := xml.EscapeText(buf, []byte(s)); err != nil {
			return err
		}
		buf.WriteString("</" + elem + ">\n")
		return nil
	}
	switch v := v.(type) {
	case string:
		return text(indent, "string", v)
	case int:
		return text(indent, "integer", strconv.Itoa(v))
	case bool:
		buf.WriteString(indent + "<" + strconv.FormatBool(v) + "/>\n")
		return nil
	case plistDict:
		buf.WriteString(indent + "<dict>\n")
		for _, e := range v {
			if err := text(indent+"\t", "key", e.key); err != nil {
				return err
			}
			if err := writePlistValue(buf, e.value, depth+1); err != nil {
				return err
			}
		}
		buf.WriteString(indent + "</dict>\n")
		return nil
	case []plistDict:
		buf.WriteString(indent + "<array>\n")
		for _, d := range v {
			if err := writePlistValue(buf, d, depth+1); err != nil {
				return err
			}
		}
		buf.WriteString(indent + "</array>\n")
		return nil
	}
	panic(fmt.Sprintf("autoconfig: no plist form for %T", v)) // programmer error
}

// digest returns the hex SHA-256 of the parts, each length-prefixed.
func digest(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// uuidOf returns a stable UUID (version 8, RFC 9562) for the parts.
func uuidOf(parts ...string) string {
	b, _ := hex.DecodeString(digest(parts...)[:32])
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	s := strings.ToUpper(hex.EncodeToString(b))
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}

// reverseDNS returns host's labels in reverse order ("com.example.mail"),
// the form Apple's payload identifiers take.
func reverseDNS(host string) string {
	labels := strings.Split(strings.ToLower(strings.TrimSuffix(host, ".")), ".")
	slices.Reverse(labels)
	return strings.Join(labels, ".")
}
