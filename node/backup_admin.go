package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mailcluster/mailcluster/cluster/backup"
	"github.com/mailcluster/mailcluster/node/admin"
)

// The backup endpoints of the admin socket. Long operations answer with
// a stream of JSON lines: progress events while they run (when the
// client asks with ?progress=1), then one line with the result or the
// error.
const (
	pathBackupNow    = "/v1/backup/now"
	pathBackupList   = "/v1/backup/list"
	pathBackupVerify = "/v1/backup/verify"
	pathBackupDrill  = "/v1/backup/drill"
	maxBackupEvent   = 1 << 20
)

// backupEvent is one line of a streamed backup operation.
type backupEvent struct {
	// Progress is a progress line; Done says it is the last for its task.
	Progress string          `json:"progress,omitempty"`
	Done     bool            `json:"done,omitempty"`
	Error    string          `json:"error,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
}

// backupNowResult describes a finished `backup now`.
type backupNowResult struct {
	ID       string    `json:"id"`
	Created  time.Time `json:"created"`
	Shards   int       `json:"shards"`
	Messages int       `json:"messages"`
	Size     int64     `json:"size"`
	Regions  []string  `json:"regions"`
	Seconds  float64   `json:"seconds"`
	Pruned   []string  `json:"pruned,omitempty"`
}

// backupListing is what `backup list` shows, from the node or local.
type backupListing struct {
	Regions     []string             `json:"regions"`
	Targets     []targetSummary      `json:"targets"`
	Backups     []backupEntry        `json:"backups"`
	Unreachable map[string]string    `json:"unreachable,omitempty"`
	LastDrill   *backup.Verification `json:"last_drill,omitempty"`
}

// targetSummary is what one target holds.
type targetSummary struct {
	Region   string `json:"region"`
	Location string `json:"location"` // without credentials
	Complete int    `json:"complete"` // backups whose manifest is there
	Partial  int    `json:"partial"`  // backups with objects but no manifest
	Bytes    int64  `json:"bytes"`
}

type backupEntry struct {
	ID           string               `json:"id"`
	Created      time.Time            `json:"created"`
	Complete     bool                 `json:"complete"`
	Shards       int                  `json:"shards"`
	Messages     int                  `json:"messages"`
	Size         int64                `json:"size"`
	Regions      []string             `json:"regions"`
	Partial      []string             `json:"partial,omitempty"`
	Verification *backup.Verification `json:"verification,omitempty"`
	Problem      string               `json:"problem,omitempty"`
}

func listingOf(cat *backup.Catalog, targets []backup.Target) backupListing {
	l := backupListing{LastDrill: cat.LastDrill, Backups: []backupEntry{}}
	for _, t := range targets {
		l.Regions = append(l.Regions, t.Region())
		l.Targets = append(l.Targets, targetSummary{Region: t.Region(), Location: t.String()})
	}
	for _, u := range cat.Unreachable {
		if l.Unreachable == nil {
			l.Unreachable = map[string]string{}
		}
		l.Unreachable[u.Region] = u.Err.Error()
	}
	for _, b := range cat.Backups {
		e := backupEntry{ID: b.ID, Created: b.Created, Complete: b.Complete, Regions: b.Regions(),
			Partial: b.Partial(), Verification: b.Verification, Problem: b.Problem}
		if m := b.Manifest; m != nil {
			e.Shards, e.Messages, e.Size = len(m.Shards), m.Messages(), m.Size()
		}
		for i, c := range b.Copies {
			if i >= len(l.Targets) {
				break
			}
			switch {
			case c.Manifest:
				l.Targets[i].Complete++
			case c.Objects > 0:
				l.Targets[i].Partial++
			}
			l.Targets[i].Bytes += c.Bytes
		}
		l.Backups = append(l.Backups, e)
	}
	return l
}

// backupAdmin serves the backup endpoints and passes everything else to
// next (the admin API).
func (n *Node) backupAdmin(next http.Handler, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+pathBackupNow, func(w http.ResponseWriter, r *http.Request) {
		n.streamBackupOp(w, r, log, func(ctx context.Context, run *backup.Runner) (any, error) {
			res, err := run.Backup(ctx)
			if err != nil {
				return nil, err
			}
			m := res.Manifest
			out := backupNowResult{ID: m.ID, Created: m.Created, Shards: len(m.Shards), Messages: m.Messages(),
				Size: m.Size(), Seconds: res.Duration.Seconds(), Pruned: res.Pruned}
			for _, t := range run.Targets() {
				out.Regions = append(out.Regions, t.Region())
			}
			return out, nil
		})
	})
	mux.HandleFunc("POST "+pathBackupVerify, func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		n.streamBackupOp(w, r, log, func(ctx context.Context, run *backup.Runner) (any, error) {
			identity, err := n.nodeIdentity()
			if err != nil {
				return nil, err
			}
			return run.Verify(ctx, id, identity)
		})
	})
	mux.HandleFunc("POST "+pathBackupDrill, func(w http.ResponseWriter, r *http.Request) {
		n.streamBackupOp(w, r, log, func(ctx context.Context, run *backup.Runner) (any, error) {
			identity, err := n.nodeIdentity()
			if err != nil {
				return nil, err
			}
			return run.Drill(ctx, identity)
		})
	})
	mux.HandleFunc("GET "+pathBackupList, func(w http.ResponseWriter, r *http.Request) {
		run := n.backupRunner()
		if run == nil {
			writeBackupError(w, http.StatusConflict, errNoBackupTargets)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
		defer cancel()
		cat, err := run.List(ctx)
		if err != nil {
			writeBackupError(w, http.StatusServiceUnavailable, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(listingOf(cat, run.Targets()))
	})
	mux.Handle("/", next)
	return mux
}

var errNoBackupTargets = errors.New("this node has no backup targets configured ([[backup.targets]] or --backup-target)")

func (n *Node) backupRunner() *backup.Runner {
	if n.backups == nil {
		return nil
	}
	return n.backups.runner
}

// nodeIdentity is the identity a verify or drill asked of the node uses.
func (n *Node) nodeIdentity() (*backup.Identity, error) {
	id, err := n.drillIdentity()
	if err == nil && id == nil {
		err = fmt.Errorf("this node has no backup identity (%s was moved offline, as it should be, and backup.drill_identity_file is not set): run the command with --identity FILE --config FILE where the identity is", backupIdentityName)
	}
	return id, err
}

func writeBackupError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(backupEvent{Error: err.Error()})
}

// streamBackupOp runs op and streams its progress and result as JSON
// lines. The operation stops if the client goes away.
func (n *Node) streamBackupOp(w http.ResponseWriter, r *http.Request, log *slog.Logger,
	op func(context.Context, *backup.Runner) (any, error)) {
	start := time.Now()
	run := n.backupRunner()
	if run == nil {
		writeBackupError(w, http.StatusConflict, errNoBackupTargets)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	ew := &eventWriter{w: w}
	ctx := r.Context()
	if r.URL.Query().Get("progress") == "1" {
		ctx = backup.WithProgress(ctx, backup.NewProgressTo(ew, backup.SystemClock{}, 500*time.Millisecond))
	}
	res, err := op(ctx, run)
	ev := backupEvent{}
	if err == nil {
		ev.Result, err = json.Marshal(res)
	}
	if err != nil {
		ev.Error = err.Error()
	}
	ew.send(ev)
	log.Info("admin request", "route", r.Pattern, "ok", err == nil, "duration", time.Since(start).Round(time.Millisecond))
}

// eventWriter turns the progress reporter's terminal output into
// progress events.
type eventWriter struct {
	mu sync.Mutex
	w  http.ResponseWriter
}

func (e *eventWriter) Write(p []byte) (int, error) {
	line := strings.TrimPrefix(string(p), "\r\x1b[K")
	done := strings.HasSuffix(line, "\n")
	e.send(backupEvent{Progress: strings.TrimSuffix(line, "\n"), Done: done})
	return len(p), nil
}

func (e *eventWriter) send(ev backupEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	// A failed write means the client went away; the request context
	// then ends the operation.
	_, _ = e.w.Write(append(b, '\n'))
	if f, ok := e.w.(http.Flusher); ok {
		f.Flush()
	}
}

// backupClient talks to the backup endpoints of the node serving a data
// directory.
type backupClient struct {
	dir    string
	socket string
	http   *http.Client
}

func newBackupClient(dataDir string) *backupClient {
	socket := admin.SocketPath(dataDir)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
	}
	return &backupClient{dir: dataDir, socket: socket, http: &http.Client{Transport: tr}}
}

func (c *backupClient) close() { c.http.CloseIdleConnections() }

func (c *backupClient) request(ctx context.Context, method, path string) (*http.Response, error) {
	return c.requestBody(ctx, method, path, nil)
}

// requestBody sends a request with a JSON body (nil for none).
func (c *backupClient) requestBody(ctx context.Context, method, path string, body []byte) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://mailnode"+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w %s (no %s): start it with `mailnode serve`, or give --config FILE to work on the targets directly", admin.ErrNoNode, c.dir, c.socket)
		}
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var ev backupEvent
		if json.NewDecoder(io.LimitReader(resp.Body, maxBackupEvent)).Decode(&ev) == nil && ev.Error != "" {
			return nil, errors.New(ev.Error)
		}
		return nil, fmt.Errorf("admin socket: %s", resp.Status)
	}
	return resp, nil
}

func (c *backupClient) list(ctx context.Context) (backupListing, error) {
	var l backupListing
	resp, err := c.request(ctx, http.MethodGet, pathBackupList)
	if err != nil {
		return l, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&l); err != nil {
		return l, fmt.Errorf("admin socket: %w", err)
	}
	return l, nil
}

// stream runs a streamed operation, drawing its progress on progress (a
// terminal, or nil for none), and decodes its result into result.
func (c *backupClient) stream(ctx context.Context, path string, progress io.Writer, result any) error {
	return c.streamBody(ctx, path, nil, progress, result)
}

// streamBody is stream with a JSON request body.
func (c *backupClient) streamBody(ctx context.Context, path string, body []byte, progress io.Writer, result any) error {
	if progress != nil {
		if strings.Contains(path, "?") {
			path += "&progress=1"
		} else {
			path += "?progress=1"
		}
	}
	resp, err := c.requestBody(ctx, http.MethodPost, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxBackupEvent)
	for sc.Scan() {
		var ev backupEvent
		if err := json.Unmarshal(bytes.TrimSpace(sc.Bytes()), &ev); err != nil {
			return fmt.Errorf("admin socket: %w", err)
		}
		switch {
		case ev.Progress != "":
			if progress != nil {
				end := ""
				if ev.Done {
					end = "\n"
				}
				fmt.Fprintf(progress, "\r\x1b[K%s%s", ev.Progress, end)
			}
		case ev.Error != "":
			return errors.New(ev.Error)
		case ev.Result != nil:
			return json.Unmarshal(ev.Result, result)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	return errors.New("admin socket: the node closed the stream without a result (did it stop?)")
}
