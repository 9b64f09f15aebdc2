package admin

import (
	"context"
	"net/http"
	"net/url"

	"github.com/mailcluster/mailcluster/cluster/directory"
)

// AdminTokens is what the admin interface manages of the tokens that
// authenticate the HTTP admin API. *directory.Directory implements it.
type AdminTokens interface {
	AddAdminToken(ctx context.Context, name string) (string, error)
	AdminTokens(ctx context.Context) ([]directory.AdminToken, error)
	RevokeAdminToken(ctx context.Context, name string) error
}

// Admin token endpoints. They are served on the admin socket only: a
// token cannot mint or revoke tokens.
const (
	PathAdminTokens = "/v1/admin/tokens"
)

type adminTokenRequest struct {
	Name string `json:"name"`
}

// AdminTokenCreated is the answer to a new admin token: the token, shown
// this once.
type AdminTokenCreated struct {
	Name  string `json:"name"`
	Token string `json:"token"`
}

func (h *handler) listAdminTokens(w http.ResponseWriter, r *http.Request) {
	toks, err := h.dir.AdminTokens(r.Context())
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toks)
}

// addAdminToken answers with the token, once; like every answer it is
// never logged.
func (h *handler) addAdminToken(w http.ResponseWriter, r *http.Request) {
	var req adminTokenRequest
	if !h.decode(w, r, &req) {
		return
	}
	tok, err := h.dir.AddAdminToken(r.Context(), req.Name)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, AdminTokenCreated{Name: req.Name, Token: tok})
}

func (h *handler) revokeAdminToken(w http.ResponseWriter, r *http.Request) {
	if err := h.dir.RevokeAdminToken(r.Context(), r.PathValue("name")); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// AddAdminToken creates an admin token and returns it; nobody can see it
// again.
func (c *Client) AddAdminToken(ctx context.Context, name string) (string, error) {
	var out AdminTokenCreated
	err := c.do(ctx, http.MethodPost, PathAdminTokens, adminTokenRequest{Name: name}, &out)
	return out.Token, err
}

// AdminTokens lists the admin tokens (names and creation times).
func (c *Client) AdminTokens(ctx context.Context) ([]directory.AdminToken, error) {
	var out []directory.AdminToken
	err := c.do(ctx, http.MethodGet, PathAdminTokens, nil, &out)
	return out, err
}

// RevokeAdminToken deletes an admin token by name.
func (c *Client) RevokeAdminToken(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, PathAdminTokens+"/"+url.PathEscape(name), nil, nil)
}
