package autoconfig

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Outlook's POX autodiscover (Exchange's "plain old XML" protocol): the
// client POSTs an Autodiscover request naming EMailAddress and reads
// Account/Protocol entries from the response.

// XML namespaces of the autodiscover documents.
const (
	// NamespaceResponse is the namespace of the response's root element.
	NamespaceResponse = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
	// NamespaceOutlookResponse is the "outlook" response schema, the only
	// one served: IMAP, POP3 and SMTP settings.
	NamespaceOutlookResponse = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)

// ErrBadRequest is wrapped by the errors of a malformed autodiscover
// request.
var ErrBadRequest = errors.New("malformed autodiscover request")

type autodiscoverRequest struct {
	XMLName xml.Name `xml:"Autodiscover"`
	Request struct {
		EMailAddress             string `xml:"EMailAddress"`
		AcceptableResponseSchema string `xml:"AcceptableResponseSchema"`
	} `xml:"Request"`
}

// parseAutodiscoverRequest returns the address an autodiscover request
// body names. The body must be one well-formed Autodiscover element
// (any namespace) with nothing but space, comments and processing
// instructions after it.
func parseAutodiscoverRequest(body io.Reader) (string, error) {
	dec := xml.NewDecoder(body)
	var req autodiscoverRequest
	if err := dec.Decode(&req); err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("%w: after the root element: %w", ErrBadRequest, err)
		}
		switch t := tok.(type) {
		case xml.Comment, xml.ProcInst:
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return "", fmt.Errorf("%w: text after the root element", ErrBadRequest)
			}
		default:
			return "", fmt.Errorf("%w: more than one root element", ErrBadRequest)
		}
	}
	addr := strings.TrimSpace(req.Request.EMailAddress)
	if addr == "" {
		return "", fmt.Errorf("%w: no Request/EMailAddress", ErrBadRequest)
	}
	return addr, nil
}

type autodiscoverResponse struct {
	XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
	Response struct {
		XMLName xml.Name            `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
		Account autodiscoverAccount `xml:"Account"`
	}
}

type autodiscoverAccount struct {
	AccountType string                 `xml:"AccountType"`
	Action      string                 `xml:"Action"`
	Protocol    []autodiscoverProtocol `xml:"Protocol"`
}

type autodiscoverProtocol struct {
	Type           string `xml:"Type"`
	Server         string `xml:"Server"`
	Port           int    `xml:"Port"`
	DomainRequired string `xml:"DomainRequired"`
	LoginName      string `xml:"LoginName"`
	// SPA off: Microsoft's NTLM login, which the node does not offer.
	SPA string `xml:"SPA"`
	SSL string `xml:"SSL"`
	// Encryption overrides SSL: "SSL" for implicit TLS, "TLS" for
	// STARTTLS.
	Encryption   string `xml:"Encryption"`
	AuthRequired string `xml:"AuthRequired"`
}

// autodiscover returns the response for an address: one Protocol per
// kind (IMAP, SMTP, POP3), each its preferred service, since Outlook
// reads one entry per type.
func (c Config) autodiscover(addr string) autodiscoverResponse {
	var resp autodiscoverResponse
	resp.Response.Account = autodiscoverAccount{AccountType: "email", Action: "settings"}
	for _, kind := range []string{kindIMAP, kindSMTP, kindPOP3} {
		offered := c.offered(kind)
		if len(offered) == 0 {
			continue
		}
		s := offered[0]
		enc := "TLS"
		if s.implicitTLS {
			enc = "SSL"
		}
		resp.Response.Account.Protocol = append(resp.Response.Account.Protocol, autodiscoverProtocol{
			Type:           strings.ToUpper(kind),
			Server:         c.Host,
			Port:           s.port,
			DomainRequired: "off",
			LoginName:      addr,
			SPA:            "off",
			SSL:            "on",
			Encryption:     enc,
			AuthRequired:   "on",
		})
	}
	return resp
}

// serveAutodiscover answers POST /autodiscover/autodiscover.xml.
func (h *Handler) serveAutodiscover(w http.ResponseWriter, r *http.Request) {
	raw, err := parseAutodiscoverRequest(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			httpError(w, http.StatusRequestEntityTooLarge, "request body too large")
			return
		}
		h.log.Debug("autoconfig request refused", "document", "autodiscover", "reason", err)
		httpError(w, http.StatusBadRequest, "malformed autodiscover request")
		return
	}
	addr, _, ok := h.account(w, r, "autodiscover", raw)
	if !ok {
		return
	}
	var buf bytes.Buffer
	if err := encodeXML(&buf, h.cfg.autodiscover(addr)); err != nil {
		h.log.Error("autodiscover: encode", "err", err)
		httpError(w, http.StatusInternalServerError, "internal error")
		return
	}
	write(w, "text/xml; charset=utf-8", &buf)
}
