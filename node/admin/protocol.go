package admin

import (
	"errors"
	"path/filepath"
	"time"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// SocketName is the admin socket's file name inside the data directory.
const SocketName = "admin.sock"

// SocketPath returns the admin socket of the node serving dataDir.
func SocketPath(dataDir string) string { return filepath.Join(dataDir, SocketName) }

// maxSocketPath is the longest socket path every unix accepts (sun_path
// is 104 bytes on the BSDs, 108 on Linux, including the final NUL).
const maxSocketPath = 103

// Limits of the protocol.
const (
	maxRequestBody  = 64 << 10
	maxResponseBody = 64 << 20
	requestTimeout  = 2 * time.Minute
)

// Status describes the running node.
type Status struct {
	NodeID   string `json:"node_id"`
	Hostname string `json:"hostname"`
	Version  string `json:"version"`
	// Ready is true when every shard has a leader; ReadyError says why
	// not otherwise.
	Ready      bool      `json:"ready"`
	ReadyError string    `json:"ready_error,omitempty"`
	Started    time.Time `json:"started"`
	// Listeners maps listener names to their bound addresses.
	Listeners map[string]string `json:"listeners"`
}

type domainRequest struct {
	Name    string `json:"name"`
	KeyMode string `json:"key_mode,omitempty"`
	Region  string `json:"region,omitempty"`
}

type tokenRequest struct {
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`
}

type tokenResponse struct {
	Token string `json:"token"`
}

type userRequest struct {
	Address  string `json:"address"`
	Password string `json:"password"`
}

type passwordRequest struct {
	Password string `json:"password"`
}

// QuotaRequest sets a user's quota on one resource (PUT
// /v1/users/{address}/quota): Resource "storage" (the default, Limit in
// bytes) or "messages" (Limit in messages); Limit 0 is unlimited, Default
// follows the cluster's default (limits.default_quota,
// limits.default_message_quota).
type QuotaRequest struct {
	Resource string  `json:"resource,omitempty"`
	Limit    *uint64 `json:"limit,omitempty"`
	Default  bool    `json:"default,omitempty"`
}

type usersResponse struct {
	Users []string `json:"users"`
}

type appPasswordRequest struct {
	Name string `json:"name"`
	// Scope lists protocols (imap, pop3, smtp); empty means all.
	Scope []string `json:"scope,omitempty"`
}

// AppPasswordCreated is the answer to a new app password: the password,
// shown this once.
type AppPasswordCreated struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

type mfaConfirmRequest struct {
	Code string `json:"code"`
}

type mfaDisableRequest struct {
	// Recovery, if set, must be one of the user's recovery codes.
	Recovery string `json:"recovery,omitempty"`
}

type domainMFARequest struct {
	// Policy is "require" or "optional".
	Policy string `json:"policy"`
}

// Domain MFA policies on the wire and on the command line.
const (
	MFARequire  = "require"
	MFAOptional = "optional"
)

// errorResponse is the body of every failed request.
type errorResponse struct {
	Code    string `json:"code"`
	Message string `json:"error"`
}

// Error codes on the wire.
const (
	CodeInvalid      = "invalid"
	CodeNoSuchUser   = "no_such_user"
	CodeUserExists   = "user_exists"
	CodeNoSuchDomain = "no_such_domain"
	CodeDomainExists = "domain_exists"
	CodeCannotDelete = "cannot_delete"
	CodeUnavailable  = "unavailable"
	CodeNoSuchNode   = "no_such_node"
	CodeNoSuchAlias  = "no_such_alias"
	CodeNoSuchToken  = "no_such_admin_token"
	CodeTokenExists  = "admin_token_exists"
	CodeInternal     = "internal"
)

var codes = []struct {
	code   string
	err    error
	status int
}{
	{CodeInvalid, schema.ErrInvalid, 400},
	{CodeNoSuchUser, schema.ErrNoSuchUser, 404},
	{CodeUserExists, schema.ErrUserExists, 409},
	{CodeNoSuchDomain, schema.ErrNoSuchDomain, 404},
	{CodeDomainExists, schema.ErrDomainExists, 409},
	{CodeCannotDelete, schema.ErrCannotDelete, 409},
	{CodeUnavailable, schema.ErrUnavailable, 503},
	{CodeNoSuchNode, cluster.ErrNoSuchNode, 404},
	{CodeNoSuchAlias, directory.ErrNoSuchAlias, 404},
	{CodeNoSuchToken, directory.ErrNoSuchAdminToken, 404},
	{CodeTokenExists, directory.ErrAdminTokenExists, 409},
}

// classify returns the wire code and HTTP status of err.
func classify(err error) (string, int) {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code, c.status
		}
	}
	return CodeInternal, 500
}

// Error is a failed admin request as the client sees it. It unwraps to
// the schema sentinel its code stands for.
type Error struct {
	Code    string
	Message string
}

// Error returns the node's message.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the schema sentinel for the code, or nil.
func (e *Error) Unwrap() error {
	for _, c := range codes {
		if c.code == e.Code {
			return c.err
		}
	}
	return nil
}
