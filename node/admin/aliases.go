package admin

import (
	"context"
	"net/http"
	"net/url"

	"github.com/mailcluster/mailcluster/cluster/directory"
)

// Aliases is what the admin interface manages of mail routing: aliases
// and catch-alls. *directory.Directory implements it.
type Aliases interface {
	AddAlias(ctx context.Context, address string, targets []string) (directory.Alias, error)
	DeleteAlias(ctx context.Context, address string, targets []string) error
	Aliases(ctx context.Context, domain string) ([]directory.Alias, error)
	SetCatchAll(ctx context.Context, domain, target string) error
}

type aliasRequest struct {
	Address string   `json:"address"`
	Targets []string `json:"targets"`
}

type aliasDeleteRequest struct {
	// Targets to remove; empty removes the whole alias.
	Targets []string `json:"targets,omitempty"`
}

type catchAllRequest struct {
	// Target is the user receiving the domain's unknown local parts; ""
	// switches the catch-all off.
	Target string `json:"target"`
}

func (h *handler) listAliases(w http.ResponseWriter, r *http.Request) {
	aliases, err := h.dir.Aliases(r.Context(), r.URL.Query().Get("domain"))
	if err != nil {
		h.fail(w, err)
		return
	}
	if aliases == nil {
		aliases = []directory.Alias{}
	}
	writeJSON(w, http.StatusOK, aliases)
}

func (h *handler) addAlias(w http.ResponseWriter, r *http.Request) {
	var req aliasRequest
	if !h.decode(w, r, &req) {
		return
	}
	a, err := h.dir.AddAlias(r.Context(), req.Address, req.Targets)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// deleteAlias takes the targets to remove in a body (POST), since a
// DELETE with a body is not dependable through proxies and clients.
func (h *handler) deleteAlias(w http.ResponseWriter, r *http.Request) {
	var req aliasDeleteRequest
	if !h.decode(w, r, &req) {
		return
	}
	if err := h.dir.DeleteAlias(r.Context(), r.PathValue("address"), req.Targets); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) setCatchAll(w http.ResponseWriter, r *http.Request) {
	var req catchAllRequest
	if !h.decode(w, r, &req) {
		return
	}
	if err := h.dir.SetCatchAll(r.Context(), r.PathValue("name"), req.Target); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Aliases lists the aliases and catch-alls of a domain, or of every
// domain for "".
func (c *Client) Aliases(ctx context.Context, domain string) ([]directory.Alias, error) {
	path := "/v1/aliases"
	if domain != "" {
		path += "?" + url.Values{"domain": {domain}}.Encode()
	}
	var out []directory.Alias
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

// AddAlias makes address deliver to targets (added to those an existing
// alias has) and returns the alias as it now is.
func (c *Client) AddAlias(ctx context.Context, address string, targets []string) (directory.Alias, error) {
	var out directory.Alias
	err := c.do(ctx, http.MethodPost, "/v1/aliases", aliasRequest{Address: address, Targets: targets}, &out)
	return out, err
}

// DeleteAlias removes targets from an alias, or the whole alias for none.
func (c *Client) DeleteAlias(ctx context.Context, address string, targets []string) error {
	return c.do(ctx, http.MethodPost, "/v1/aliases/"+url.PathEscape(address)+"/delete", aliasDeleteRequest{Targets: targets}, nil)
}

// SetCatchAll makes target receive a domain's mail to unknown local
// parts; "" switches it off.
func (c *Client) SetCatchAll(ctx context.Context, domain, target string) error {
	return c.do(ctx, http.MethodPut, "/v1/domains/"+url.PathEscape(domain)+"/catch-all", catchAllRequest{Target: target}, nil)
}
