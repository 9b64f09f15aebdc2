package admin

import (
	"context"
	"net/http"
	"net/url"
)

// SentCopies is what the admin interface needs of the directory for the
// per-domain Sent copy setting. *directory.Directory implements it.
type SentCopies interface {
	SetDomainSentCopy(ctx context.Context, domain string, on bool) error
}

type sentCopyRequest struct {
	// On makes submission store a copy of what the domain's users send
	// in their Sent mailbox.
	On bool `json:"on"`
}

func (h *handler) setSentCopy(w http.ResponseWriter, r *http.Request) {
	var req sentCopyRequest
	if !h.decode(w, r, &req) {
		return
	}
	if err := h.dir.SetDomainSentCopy(r.Context(), r.PathValue("name"), req.On); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// SetDomainSentCopy switches a domain's Sent copies on or off.
func (c *Client) SetDomainSentCopy(ctx context.Context, domain string, on bool) error {
	return c.do(ctx, http.MethodPut, "/v1/domains/"+url.PathEscape(domain)+"/sent-copy", sentCopyRequest{On: on}, nil)
}
