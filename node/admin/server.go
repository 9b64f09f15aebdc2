package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Directory is what the admin interface manages: the cluster's domains,
// users and aliases. *directory.Directory implements it (and the node adds
// Compact).
type Directory interface {
	AddDomain(ctx context.Context, name string, mode directory.KeyMode, region string) error
	DeleteDomain(ctx context.Context, name string) error
	Domains(ctx context.Context) ([]directory.Domain, error)
	AddUser(ctx context.Context, address, password string) error
	// EraseUser deletes a user everywhere (crypto-shredding its key) and
	// reports what it did.
	EraseUser(ctx context.Context, address string) (DeleteResult, error)
	SetPassword(ctx context.Context, address, password string) error
	// SetQuota sets a user's storage quota, or returns them to the
	// cluster's default.
	SetQuota(ctx context.Context, address string, q directory.QuotaSetting) error
	Users(ctx context.Context, domain string) ([]string, error)
	User(ctx context.Context, address string) (directory.UserInfo, error)
	AddAppPassword(ctx context.Context, address, name string, scope []string) (string, error)
	AppPasswords(ctx context.Context, address string) ([]directory.AppPassword, error)
	RevokeAppPassword(ctx context.Context, address, name string) error
	EnableMFA(ctx context.Context, address string) (directory.MFAEnrollment, error)
	ConfirmMFA(ctx context.Context, address, code string) error
	DisableMFA(ctx context.Context, address, recovery string) error
	SetDomainMFA(ctx context.Context, domain string, require bool) error
	Aliases
	SentCopies
	AdminTokens
	// Compact snapshots every shard, truncating the Raft logs.
	Compact(ctx context.Context) error
}

// Cluster is the membership the admin interface manages. *cluster.Cluster
// implements it.
type Cluster interface {
	Status() cluster.Status
	IssueToken(ctx context.Context, ttl time.Duration) (string, error)
	RemoveNode(ctx context.Context, id string) error
}

// NewHandler returns the admin API over dir and cl. status reports the
// node's state for GET /v1/status.
func NewHandler(dir Directory, cl Cluster, status func(context.Context) Status, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &handler{dir: dir, cl: cl, status: status, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", h.getStatus)
	mux.HandleFunc("GET /v1/domains", h.listDomains)
	mux.HandleFunc("POST /v1/domains", h.addDomain)
	mux.HandleFunc("DELETE /v1/domains/{name}", h.deleteDomain)
	mux.HandleFunc("GET /v1/users", h.listUsers)
	mux.HandleFunc("GET /v1/users/{address}", h.showUser)
	mux.HandleFunc("POST /v1/users", h.addUser)
	mux.HandleFunc("DELETE /v1/users/{address}", h.deleteUser)
	mux.HandleFunc("PUT /v1/users/{address}/password", h.setPassword)
	mux.HandleFunc("PUT /v1/users/{address}/quota", h.setQuota)
	mux.HandleFunc("GET /v1/users/{address}/app-passwords", h.listAppPasswords)
	mux.HandleFunc("POST /v1/users/{address}/app-passwords", h.addAppPassword)
	mux.HandleFunc("DELETE /v1/users/{address}/app-passwords/{name}", h.revokeAppPassword)
	mux.HandleFunc("POST /v1/users/{address}/mfa", h.enableMFA)
	mux.HandleFunc("POST /v1/users/{address}/mfa/confirm", h.confirmMFA)
	mux.HandleFunc("POST /v1/users/{address}/mfa/disable", h.disableMFA)
	mux.HandleFunc("PUT /v1/domains/{name}/mfa", h.setDomainMFA)
	mux.HandleFunc("PUT /v1/domains/{name}/catch-all", h.setCatchAll)
	mux.HandleFunc("PUT /v1/domains/{name}/sent-copy", h.setSentCopy)
	mux.HandleFunc("GET /v1/aliases", h.listAliases)
	mux.HandleFunc("POST /v1/aliases", h.addAlias)
	mux.HandleFunc("POST /v1/aliases/{address}/delete", h.deleteAlias)
	mux.HandleFunc("POST /v1/compact", h.compact)
	mux.HandleFunc("GET /v1/cluster", h.clusterStatus)
	mux.HandleFunc("POST /v1/cluster/tokens", h.issueToken)
	mux.HandleFunc("DELETE /v1/cluster/nodes/{id}", h.removeNode)
	mux.HandleFunc("GET "+PathAdminTokens, h.listAdminTokens)
	mux.HandleFunc("POST "+PathAdminTokens, h.addAdminToken)
	mux.HandleFunc("DELETE "+PathAdminTokens+"/{name}", h.revokeAdminToken)
	h.mux = mux
	return h
}

type handler struct {
	dir    Directory
	cl     Cluster
	status func(context.Context) Status
	log    *slog.Logger
	mux    *http.ServeMux
}

// statusRecorder remembers the status code for the request log.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	r = r.WithContext(ctx)
	r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	h.mux.ServeHTTP(rec, r)
	// The pattern, not the path: paths hold addresses.
	h.log.Info("admin request", "method", r.Method, "route", r.Pattern, "status", rec.code,
		"duration", time.Since(start).Round(time.Millisecond))
	h.log.Debug("admin request path", "path", r.URL.Path)
}

func (h *handler) getStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.status(r.Context()))
}

func (h *handler) listDomains(w http.ResponseWriter, r *http.Request) {
	doms, err := h.dir.Domains(r.Context())
	if err != nil {
		h.fail(w, err)
		return
	}
	if doms == nil {
		doms = []directory.Domain{}
	}
	writeJSON(w, http.StatusOK, doms)
}

func (h *handler) addDomain(w http.ResponseWriter, r *http.Request) {
	var req domainRequest
	if !h.decode(w, r, &req) {
		return
	}
	if err := h.dir.AddDomain(r.Context(), req.Name, directory.KeyMode(req.KeyMode), req.Region); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) deleteDomain(w http.ResponseWriter, r *http.Request) {
	if err := h.dir.DeleteDomain(r.Context(), r.PathValue("name")); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) listUsers(w http.ResponseWriter, r *http.Request) {
	users, err := h.dir.Users(r.Context(), r.URL.Query().Get("domain"))
	if err != nil {
		h.fail(w, err)
		return
	}
	if users == nil {
		users = []string{}
	}
	writeJSON(w, http.StatusOK, usersResponse{Users: users})
}

func (h *handler) showUser(w http.ResponseWriter, r *http.Request) {
	u, err := h.dir.User(r.Context(), r.PathValue("address"))
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

func (h *handler) addUser(w http.ResponseWriter, r *http.Request) {
	var req userRequest
	if !h.decode(w, r, &req) {
		return
	}
	if err := h.dir.AddUser(r.Context(), req.Address, req.Password); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) deleteUser(w http.ResponseWriter, r *http.Request) {
	res, err := h.dir.EraseUser(r.Context(), r.PathValue("address"))
	if err != nil {
		h.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}

// DeleteResult is what deleting a user did: the directory's report, and
// where the backups' key store was rewritten so that the destroyed key is
// gone from existing backups too.
type DeleteResult struct {
	directory.DeleteReport
	// BackupKeyStore lists the backup targets and whether each now holds
	// the key store without the user's key; empty when this node has no
	// backup targets.
	BackupKeyStore []KeyStoreWrite `json:"backup_key_store,omitempty"`
	// BackupNote explains what is left to do for the backups, if anything.
	BackupNote string `json:"backup_note,omitempty"`
}

// KeyStoreWrite is the outcome of rewriting the key store on one backup
// target.
type KeyStoreWrite struct {
	Region string `json:"region"`
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
}

func (h *handler) setPassword(w http.ResponseWriter, r *http.Request) {
	var req passwordRequest
	if !h.decode(w, r, &req) {
		return
	}
	if err := h.dir.SetPassword(r.Context(), r.PathValue("address"), req.Password); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) setQuota(w http.ResponseWriter, r *http.Request) {
	var req QuotaRequest
	if !h.decode(w, r, &req) {
		return
	}
	if req.Default == (req.Limit != nil) {
		h.fail(w, fmt.Errorf("quota: give either a limit in bytes (0 for unlimited) or default: %w", schema.ErrInvalid))
		return
	}
	q := directory.QuotaSetting{Resource: directory.QuotaResource(req.Resource), Default: req.Default}
	if req.Limit != nil {
		q.Limit = *req.Limit
	}
	if err := h.dir.SetQuota(r.Context(), r.PathValue("address"), q); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// The answers below carry secrets (a new app password, a TOTP key,
// recovery codes) to the admin once; like every answer they are never
// logged.

func (h *handler) addAppPassword(w http.ResponseWriter, r *http.Request) {
	var req appPasswordRequest
	if !h.decode(w, r, &req) {
		return
	}
	pw, err := h.dir.AddAppPassword(r.Context(), r.PathValue("address"), req.Name, req.Scope)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, AppPasswordCreated{Name: req.Name, Password: pw})
}

func (h *handler) listAppPasswords(w http.ResponseWriter, r *http.Request) {
	aps, err := h.dir.AppPasswords(r.Context(), r.PathValue("address"))
	if err != nil {
		h.fail(w, err)
		return
	}
	if aps == nil {
		aps = []directory.AppPassword{}
	}
	writeJSON(w, http.StatusOK, aps)
}

func (h *handler) revokeAppPassword(w http.ResponseWriter, r *http.Request) {
	if err := h.dir.RevokeAppPassword(r.Context(), r.PathValue("address"), r.PathValue("name")); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) enableMFA(w http.ResponseWriter, r *http.Request) {
	enr, err := h.dir.EnableMFA(r.Context(), r.PathValue("address"))
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, enr)
}

func (h *handler) confirmMFA(w http.ResponseWriter, r *http.Request) {
	var req mfaConfirmRequest
	if !h.decode(w, r, &req) {
		return
	}
	if err := h.dir.ConfirmMFA(r.Context(), r.PathValue("address"), req.Code); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) disableMFA(w http.ResponseWriter, r *http.Request) {
	var req mfaDisableRequest
	if !h.decode(w, r, &req) {
		return
	}
	if err := h.dir.DisableMFA(r.Context(), r.PathValue("address"), req.Recovery); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) setDomainMFA(w http.ResponseWriter, r *http.Request) {
	var req domainMFARequest
	if !h.decode(w, r, &req) {
		return
	}
	var require bool
	switch req.Policy {
	case MFARequire:
		require = true
	case MFAOptional:
	default:
		h.fail(w, fmt.Errorf("MFA policy %.32q (want %s or %s): %w", req.Policy, MFARequire, MFAOptional, schema.ErrInvalid))
		return
	}
	if err := h.dir.SetDomainMFA(r.Context(), r.PathValue("name"), require); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) clusterStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.cl.Status())
}

func (h *handler) issueToken(w http.ResponseWriter, r *http.Request) {
	var req tokenRequest
	if !h.decode(w, r, &req) {
		return
	}
	tok, err := h.cl.IssueToken(r.Context(), time.Duration(req.TTLSeconds)*time.Second)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, tokenResponse{Token: tok})
}

func (h *handler) removeNode(w http.ResponseWriter, r *http.Request) {
	if err := h.cl.RemoveNode(r.Context(), r.PathValue("id")); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) compact(w http.ResponseWriter, r *http.Request) {
	if err := h.dir.Compact(r.Context()); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// decode reads a JSON body with no unknown fields; it answers 400 itself.
func (h *handler) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		h.fail(w, fmt.Errorf("bad request body: %s: %w", describeDecodeError(err), schema.ErrInvalid))
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		h.fail(w, fmt.Errorf("bad request body: trailing data: %w", schema.ErrInvalid))
		return false
	}
	return true
}

// describeDecodeError names what is wrong with a body without quoting
// any of it: the body may hold a password.
func describeDecodeError(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("malformed JSON at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	case errors.As(err, &tooLarge):
		return fmt.Sprintf("larger than %d bytes", tooLarge.Limit)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "empty or truncated"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// Names the field the client sent, not a value.
		return strings.TrimPrefix(err.Error(), "json: ")
	default:
		return "not a JSON object of the expected form"
	}
}

func (h *handler) fail(w http.ResponseWriter, err error) {
	code, status := classify(err)
	msg := err.Error()
	if code == CodeInternal {
		h.log.Error("admin request failed", "err", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		code, status = CodeUnavailable, http.StatusServiceUnavailable
		msg = "the node did not finish the request in time: " + msg
	}
	writeJSON(w, status, errorResponse{Code: code, Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The client reads what arrived; a write error means it went away.
	_ = json.NewEncoder(w).Encode(v)
}

// Listen creates the admin socket of dataDir with mode 0600, replacing a
// stale socket left by a crashed node. The caller must hold the data
// directory's lock, so the socket cannot belong to a live node.
func Listen(dataDir string) (net.Listener, error) {
	path := SocketPath(dataDir)
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("admin socket path %s is %d bytes, longer than the %d a unix socket allows: use a shorter data directory path", path, len(path), maxSocketPath)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("admin socket %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale admin socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	// The data directory is 0700, so nobody else can reach the socket in
	// the moment before the chmod.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}
