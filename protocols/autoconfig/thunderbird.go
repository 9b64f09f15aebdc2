package autoconfig

import (
	"bytes"
	"encoding/xml"
	"net/http"
	"strings"
)

// The Mozilla ISPDB format (clientConfig version 1.1), as Thunderbird,
// K-9 Mail / Thunderbird for Android and others read it.

// UsernameEmailAddress is the clientConfig placeholder the client
// replaces with the address the user typed.
const UsernameEmailAddress = "%EMAILADDRESS%"

type clientConfig struct {
	XMLName  xml.Name      `xml:"clientConfig"`
	Version  string        `xml:"version,attr"`
	Provider emailProvider `xml:"emailProvider"`
}

type emailProvider struct {
	ID               string        `xml:"id,attr"`
	Domain           []string      `xml:"domain"`
	DisplayName      string        `xml:"displayName"`
	DisplayShortName string        `xml:"displayShortName"`
	Incoming         []ispdbServer `xml:"incomingServer"`
	Outgoing         []ispdbServer `xml:"outgoingServer"`
}

type ispdbServer struct {
	Type           string `xml:"type,attr"`
	Hostname       string `xml:"hostname"`
	Port           int    `xml:"port"`
	SocketType     string `xml:"socketType"`
	Authentication string `xml:"authentication"`
	Username       string `xml:"username"`
}

// clientConfig returns the document for a domain: IMAP, then POP3, then
// SMTP submission, implicit TLS before STARTTLS, in order of preference
// (the client takes the first incoming and outgoing server it can
// reach).
func (c Config) clientConfig(domain string) clientConfig {
	p := emailProvider{
		ID:               domain,
		Domain:           []string{domain},
		DisplayName:      domain,
		DisplayShortName: strings.SplitN(domain, ".", 2)[0],
	}
	server := func(s service) ispdbServer {
		socket := "STARTTLS"
		if s.implicitTLS {
			socket = "SSL"
		}
		return ispdbServer{
			Type:           s.kind,
			Hostname:       c.Host,
			Port:           s.port,
			SocketType:     socket,
			Authentication: "password-cleartext", // inside TLS
			Username:       UsernameEmailAddress,
		}
	}
	for _, kind := range []string{kindIMAP, kindPOP3} {
		for _, s := range c.offered(kind) {
			p.Incoming = append(p.Incoming, server(s))
		}
	}
	for _, s := range c.offered(kindSMTP) {
		p.Outgoing = append(p.Outgoing, server(s))
	}
	return clientConfig{Version: "1.1", Provider: p}
}

// serveAutoconfig answers Thunderbird's
// GET /mail/config-v1.1.xml?emailaddress=ADDR (and the .well-known
// path).
func (h *Handler) serveAutoconfig(w http.ResponseWriter, r *http.Request) {
	raw := queryAddress(w, r)
	if raw == "" {
		return
	}
	_, domain, ok := h.account(w, r, "autoconfig", raw)
	if !ok {
		return
	}
	var buf bytes.Buffer
	if err := encodeXML(&buf, h.cfg.clientConfig(domain)); err != nil {
		h.log.Error("autoconfig: encode", "err", err)
		httpError(w, http.StatusInternalServerError, "internal error")
		return
	}
	write(w, "application/xml; charset=utf-8", &buf)
}

// encodeXML writes an XML declaration and v, indented.
func encodeXML(buf *bytes.Buffer, v any) error {
	buf.WriteString(xml.Header)
	enc := xml.NewEncoder(buf)
	enc.Indent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	buf.WriteByte('\n')
	return nil
}
