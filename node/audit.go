package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
)

// pathAudit lists the audit log.
const pathAudit = "/v1/audit"

// Bounds of the audit log.
const (
	// DefaultAuditRetention is how long audit entries are kept.
	DefaultAuditRetention = 400 * 24 * time.Hour
	// auditPruneEvery is how often a node prunes the log.
	auditPruneEvery = time.Hour
	// auditBodyPeek bounds the request body read for what an action names.
	auditBodyPeek = 64 << 10
	// auditWriteTimeout bounds recording one entry.
	auditWriteTimeout = 10 * time.Second
)

const auditUsage = `
Audit log:
  mailnode audit [--since DURATION] [--json]   administrative actions of the whole cluster
    (who, what, when, on which node; default the last 30 days)
`

// auditSubjectFields are the request fields an audit entry keeps: names
// of what the action touches, never passwords, codes or tokens.
var auditSubjectFields = map[string]bool{
	"name": true, "address": true, "domain": true, "alias": true, "targets": true, "target": true,
	"region": true, "key_mode": true, "kind": true, "to": true, "scope": true, "value": true,
	"mode": true, "id": true, "node": true,
}

// peerKey is the context key of who sent an admin request: the admin
// socket peer's user, or the admin token of an HTTPS request.
type peerKey struct{}

// remoteKey is the context key of an HTTPS admin request's client
// address.
type remoteKey struct{}

// adminConnContext records who is on the other end of an admin socket
// connection.
func adminConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, peerUser(c))
}

// peerUser names the system user of a unix socket peer ("uid N" when the
// name is unknown, "unknown" when the system does not say).
func peerUser(c net.Conn) string {
	uid, ok := peerUID(c)
	if !ok {
		return "unknown"
	}
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return "uid " + strconv.Itoa(uid)
}

// statusRecorder keeps the status a handler answered.
type statusRecorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer // the start of an error answer
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	if s.status >= 400 && s.body.Len() < 512 {
		s.body.Write(p[:min(len(p), 512-s.body.Len())])
	}
	return s.ResponseWriter.Write(p)
}

// Flush lets streamed answers (backups, imports) through.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// auditAdmin records every action (any request but GET) taken through
// the admin socket in the cluster's audit log, and serves the log.
func (n *Node) auditAdmin(next http.Handler, log *slog.Logger) http.Handler {
	var pruneMu sync.Mutex
	var lastPrune time.Time
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == pathAudit {
			n.serveAudit(w, r)
			return
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		subject := map[string]string{}
		if r.Body != nil {
			peek, _ := io.ReadAll(io.LimitReader(r.Body, auditBodyPeek))
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(peek), r.Body))
			auditFields(peek, subject)
		}
		for _, seg := range strings.Split(strings.Trim(r.URL.Path, "/"), "/") {
			if strings.Contains(seg, "@") || strings.Contains(seg, ".") {
				subject["path"] = seg // an address or domain named in the path
			}
		}
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		who, _ := r.Context().Value(peerKey{}).(string)
		remote, _ := r.Context().Value(remoteKey{}).(string)
		e := directory.AuditEntry{Time: n.now().UTC(), Node: n.cfg.NodeID, Who: who, Remote: remote, Action: r.Method + " " + r.URL.Path, Result: "ok"}
		if len(subject) > 0 {
			e.Subject = subject
		}
		if rec.status >= 400 {
			e.Result = fmt.Sprintf("refused (%d): %s", rec.status, strings.TrimSpace(auditErrorText(rec.body.Bytes())))
		}
		if n.directory == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditWriteTimeout)
		defer cancel()
		if err := n.directory.RecordAudit(ctx, e); err != nil {
			log.Warn("audit entry not recorded", "action", e.Action, "err", err)
		}
		pruneMu.Lock()
		due := n.now().Sub(lastPrune) > auditPruneEvery
		if due {
			lastPrune = n.now()
		}
		pruneMu.Unlock()
		if due {
			if k, err := n.directory.PruneAudit(ctx, n.now().Add(-n.auditRetention())); err != nil {
				log.Warn("prune the audit log", "err", err)
			} else if k > 0 {
				log.Info("audit log pruned", "entries", k)
			}
		}
	})
}

func (n *Node) auditRetention() time.Duration {
	if n.cfg.AuditRetention > 0 {
		return n.cfg.AuditRetention
	}
	return DefaultAuditRetention
}

// auditFields copies the allowed fields of a JSON request body.
func auditFields(body []byte, into map[string]string) {
	var m map[string]any
	if json.Unmarshal(body, &m) != nil {
		return
	}
	for k, v := range m {
		if !auditSubjectFields[k] {
			continue
		}
		var s string
		switch v := v.(type) {
		case string:
			s = v
		case []any:
			parts := make([]string, 0, len(v))
			for _, x := range v {
				parts = append(parts, fmt.Sprint(x))
			}
			s = strings.Join(parts, ",")
		case bool, float64:
			s = fmt.Sprint(v)
		default:
			continue
		}
		if len(s) > 300 {
			s = s[:300]
		}
		into[k] = s
	}
}

// auditErrorText takes the message out of an admin error answer.
func auditErrorText(b []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return e.Error
	}
	return string(b)
}

// serveAudit answers the audit log since ?since=<unix seconds>.
func (n *Node) serveAudit(w http.ResponseWriter, r *http.Request) {
	since := time.Now().Add(-30 * 24 * time.Hour)
	if s := r.URL.Query().Get("since"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			writeBackupError(w, http.StatusBadRequest, fmt.Errorf("since %q: want Unix seconds", s))
			return
		}
		since = time.Unix(sec, 0)
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	entries, err := n.directory.Audit(ctx, since)
	if err != nil {
		writeBackupError(w, http.StatusServiceUnavailable, err)
		return
	}
	if entries == nil {
		entries = []directory.AuditEntry{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(entries)
}

// auditCommand is "mailnode audit".
func (c CLI) auditCommand(ctx context.Context, args []string) error {
	fs := newFlagSet("audit")
	data := fs.String("data", "", "data directory of the node")
	config := fs.String("config", "", "config file")
	since := fs.Duration("since", 30*24*time.Hour, "how far back")
	asJSON := fs.Bool("json", false, "JSON output")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *since <= 0 {
		return fmt.Errorf("%w: audit [--since DURATION] [--json]", errUsage)
	}
	dir, err := dataDirArg("audit", *data, *config)
	if err != nil {
		return err
	}
	client := newBackupClient(dir)
	defer client.close()
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	resp, err := client.request(ctx, http.MethodGet, fmt.Sprintf("%s?since=%d", pathAudit, time.Now().Add(-*since).Unix()))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var entries []directory.AuditEntry
	if err := json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(&entries); err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(c.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(entries)
	}
	tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tNODE\tWHO\tACTION\tSUBJECT\tRESULT")
	for _, e := range entries {
		var subj []string
		for _, k := range sortedKeys(e.Subject) {
			subj = append(subj, k+"="+e.Subject[k])
		}
		who := e.Who
		if e.Remote != "" {
			who += " from " + e.Remote
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), e.Node, who, e.Action, strings.Join(subj, " "), e.Result)
	}
	return tw.Flush()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
