package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/directory"
)

// ErrNoNode means no node serves the data directory: its admin socket is
// missing or nobody listens on it.
var ErrNoNode = errors.New("no node is serving the data directory")

// Client talks to the node serving one data directory.
type Client struct {
	dataDir string
	socket  string
	http    *http.Client
}

// NewClient returns a client for the node serving dataDir. It connects
// on each request, so it may be created before the node starts.
func NewClient(dataDir string) *Client {
	socket := SocketPath(dataDir)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
		MaxIdleConns:       1,
	}
	return &Client{dataDir: dataDir, socket: socket, http: &http.Client{Transport: tr}}
}

// Close releases idle connections.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// Status returns the node's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
	return s, err
}

// Domains lists the served domains.
func (c *Client) Domains(ctx context.Context) ([]directory.Domain, error) {
	var d []directory.Domain
	err := c.do(ctx, http.MethodGet, "/v1/domains", nil, &d)
	return d, err
}

// AddDomain starts serving a domain; mode "" is the node's default, and a
// non-empty region pins the domain's mail there.
func (c *Client) AddDomain(ctx context.Context, name string, mode directory.KeyMode, region string) error {
	return c.do(ctx, http.MethodPost, "/v1/domains", domainRequest{Name: name, KeyMode: string(mode), Region: region}, nil)
}

// ClusterStatus returns the cluster as the node sees it.
func (c *Client) ClusterStatus(ctx context.Context) (cluster.Status, error) {
	var s cluster.Status
	err := c.do(ctx, http.MethodGet, "/v1/cluster", nil, &s)
	return s, err
}

// IssueToken asks for a one-time join token valid for ttl (0: the
// default).
func (c *Client) IssueToken(ctx context.Context, ttl time.Duration) (string, error) {
	var resp tokenResponse
	err := c.do(ctx, http.MethodPost, "/v1/cluster/tokens", tokenRequest{TTLSeconds: int64(ttl / time.Second)}, &resp)
	return resp.Token, err
}

// RemoveNode removes a node from the cluster.
func (c *Client) RemoveNode(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/cluster/nodes/"+url.PathEscape(id), nil, nil)
}

// DeleteDomain stops serving a domain without users.
func (c *Client) DeleteDomain(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/domains/"+url.PathEscape(name), nil, nil)
}

// Users lists the users of a domain, or of every domain for "".
func (c *Client) Users(ctx context.Context, domain string) ([]string, error) {
	path := "/v1/users"
	if domain != "" {
		path += "?" + url.Values{"domain": {domain}}.Encode()
	}
	var resp usersResponse
	err := c.do(ctx, http.MethodGet, path, nil, &resp)
	return resp.Users, err
}

// User shows one user (address, domain, mail shard, creation time).
func (c *Client) User(ctx context.Context, address string) (directory.UserInfo, error) {
	var u directory.UserInfo
	err := c.do(ctx, http.MethodGet, "/v1/users/"+url.PathEscape(address), nil, &u)
	return u, err
}

// AddUser creates a user with a password.
func (c *Client) AddUser(ctx context.Context, address, password string) error {
	return c.do(ctx, http.MethodPost, "/v1/users", userRequest{Address: address, Password: password}, nil)
}

// DeleteUser deletes a user and all its mail.
func (c *Client) DeleteUser(ctx context.Context, address string) error {
	_, err := c.EraseUser(ctx, address)
	return err
}

// EraseUser deletes a user and all its mail, destroying its key, and
// returns what was done.
func (c *Client) EraseUser(ctx context.Context, address string) (DeleteResult, error) {
	var res DeleteResult
	err := c.do(ctx, http.MethodDelete, "/v1/users/"+url.PathEscape(address), nil, &res)
	return res, err
}

// SetPassword replaces a user's password.
func (c *Client) SetPassword(ctx context.Context, address, password string) error {
	return c.do(ctx, http.MethodPut, "/v1/users/"+url.PathEscape(address)+"/password", passwordRequest{Password: password}, nil)
}

// SetQuota sets a user's quota on one resource (q.Limit, 0 for
// unlimited) or returns them to the cluster's default (q.Default).
func (c *Client) SetQuota(ctx context.Context, address string, q directory.QuotaSetting) error {
	req := QuotaRequest{Resource: string(q.Resource), Default: q.Default}
	if !q.Default {
		req.Limit = &q.Limit
	}
	return c.do(ctx, http.MethodPut, "/v1/users/"+url.PathEscape(address)+"/quota", req, nil)
}

// AddAppPassword gives a user a new app password for the protocols of
// scope (nil for all) and returns it; nobody can see it again.
func (c *Client) AddAppPassword(ctx context.Context, address, name string, scope []string) (string, error) {
	var resp AppPasswordCreated
	err := c.do(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(address)+"/app-passwords", appPasswordRequest{Name: name, Scope: scope}, &resp)
	return resp.Password, err
}

// AppPasswords lists a user's app passwords (names, scopes, creation and
// last use; never the passwords).
func (c *Client) AppPasswords(ctx context.Context, address string) ([]directory.AppPassword, error) {
	var aps []directory.AppPassword
	err := c.do(ctx, http.MethodGet, "/v1/users/"+url.PathEscape(address)+"/app-passwords", nil, &aps)
	return aps, err
}

// RevokeAppPassword deletes a user's app password by name.
func (c *Client) RevokeAppPassword(ctx context.Context, address, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/users/"+url.PathEscape(address)+"/app-passwords/"+url.PathEscape(name), nil, nil)
}

// EnableMFA enrols a user in TOTP MFA (pending until confirmed) and
// returns the otpauth:// URI and recovery codes, shown this once.
func (c *Client) EnableMFA(ctx context.Context, address string) (directory.MFAEnrollment, error) {
	var enr directory.MFAEnrollment
	err := c.do(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(address)+"/mfa", nil, &enr)
	return enr, err
}

// ConfirmMFA switches a pending enrolment on with a code from the
// user's authenticator app.
func (c *Client) ConfirmMFA(ctx context.Context, address, code string) error {
	return c.do(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(address)+"/mfa/confirm", mfaConfirmRequest{Code: code}, nil)
}

// DisableMFA removes a user's MFA; a non-empty recovery code must be one
// of the user's.
func (c *Client) DisableMFA(ctx context.Context, address, recovery string) error {
	return c.do(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(address)+"/mfa/disable", mfaDisableRequest{Recovery: recovery}, nil)
}

// SetDomainMFA sets a domain's MFA policy, MFARequire or MFAOptional.
func (c *Client) SetDomainMFA(ctx context.Context, domain, policy string) error {
	return c.do(ctx, http.MethodPut, "/v1/domains/"+url.PathEscape(domain)+"/mfa", domainMFARequest{Policy: policy}, nil)
}

// Compact snapshots every shard of the node, truncating its Raft logs.
func (c *Client) Compact(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/compact", nil, nil)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://mailnode"+path, body)
	if err != nil {
		return fmt.Errorf("admin request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w %s (admin socket %s unreachable); start one with: mailnode serve --data %s",
				ErrNoNode, c.dataDir, c.socket, c.dataDir)
		}
		return fmt.Errorf("admin request to %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		return fmt.Errorf("read admin response: %w", err)
	}
	if len(data) > maxResponseBody {
		return fmt.Errorf("admin response larger than %d bytes", maxResponseBody)
	}
	if resp.StatusCode >= 300 {
		var e errorResponse
		if json.Unmarshal(data, &e) != nil || e.Message == "" {
			return fmt.Errorf("admin request failed: %s", resp.Status)
		}
		return &Error{Code: e.Code, Message: e.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode admin response: %w", err)
	}
	return nil
}
