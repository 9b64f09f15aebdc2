package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/node/admin"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Session review: every node keeps the open authenticated sessions of
// its frontends (protocols.SessionRegistry), lists them when another
// node asks by broadcast (the answer is broadcast too, paired by a
// request id), and ends a user's sessions on
// "mailnode user sessions --kill", and on password change, app password
// revocation, MFA confirmation or removal and user deletion: the node
// that takes the admin action ends its own sessions and broadcasts the
// kill to the others. Logins go to a history in the meta shard, at most
// one record per user, protocol, address, credential (the account
// password or an app password's name) and result per loginRecordEvery
// on each node.

const (
	// sessionsTopic is the broadcast topic of session kills.
	sessionsTopic = "sessions"
	// DefaultLoginHistoryRetention is how long login records are kept.
	DefaultLoginHistoryRetention = 30 * 24 * time.Hour
	// loginRecordEvery is the least time between two records of the same
	// user, protocol, client address, credential and result written by
	// one node.
	loginRecordEvery = 10 * time.Minute
	// maxLoginThrottle bounds the throttle's memory; when it is full of
	// recent keys, further logins go unrecorded until some age out.
	maxLoginThrottle = 100000
	// loginQueue bounds the records waiting for their write; beyond it
	// records are dropped (the history is best effort, logins are not
	// slowed down by it).
	loginQueue = 1024
	// loginWriteTimeout bounds the write of one record.
	loginWriteTimeout = 10 * time.Second
	// loginPruneEvery is how often a node prunes the history.
	loginPruneEvery = time.Hour
)

const sessionsUsage = `
Sessions and recent logins:
  mailnode user sessions --data DIR [--since DURATION] [--json] ADDRESS
      recent logins (time, node, protocol, client address, credential, result)
      and the open sessions of every node that answers within 2 s
  mailnode user sessions --data DIR --kill ADDRESS
      end every open IMAP, POP3 and SMTP session of the user on every node
`

// The operations of a sessions broadcast message.
const (
	// sessionOpKill ends a user's sessions.
	sessionOpKill = "kill"
	// sessionOpList asks every node for the user's open sessions.
	sessionOpList = "list"
	// sessionOpOpen answers a list request: one node's open sessions.
	sessionOpOpen = "open"
)

// listWait bounds how long a listing waits for the other nodes' answers
// (a broadcast leaves within about 200 ms, so the round trip takes well
// under a second on a healthy cluster).
const listWait = 2 * time.Second

// sessionMsg is a sessions broadcast message.
type sessionMsg struct {
	Op   string `json:"op"`
	User string `json:"user,omitempty"`
	// Domain, in a kill without User, names the domain whose users'
	// sessions end.
	Domain string `json:"domain,omitempty"`
	// Credential limits a kill to the sessions of one credential (an app
	// password's name); "" ends all.
	Credential string `json:"credential,omitempty"`
	// ID pairs a list request with its answers.
	ID string `json:"id,omitempty"`
	// Node and Open are an answer's node and its open sessions.
	Node string                  `json:"node,omitempty"`
	Open []protocols.SessionInfo `json:"open,omitempty"`
}

// loginKey is what the history throttle counts.
type loginKey struct {
	user, protocol, remote, credential string
	success                            bool
}

// sessionService is the node's session registry and login history.
type sessionService struct {
	n        *Node
	registry *protocols.SessionRegistry
	log      *slog.Logger

	mu   sync.Mutex
	last map[loginKey]time.Time
	// nextSweep is when a full throttle may next be swept for expired
	// keys (a sweep walks all of them: not once per login in a flood).
	nextSweep time.Time

	// pending holds the list requests waiting for answers, by id.
	pmu     sync.Mutex
	pending map[string]chan sessionMsg

	queue chan protocols.LoginEvent
	stop  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

// startSessions makes the session registry and login history of the
// node and starts the history's writer.
func (n *Node) startSessions() *sessionService {
	s := &sessionService{
		n:        n,
		registry: protocols.NewSessionRegistry(n.now),
		log:      n.log.With("component", "sessions"),
		last:     map[loginKey]time.Time{},
		pending:  map[string]chan sessionMsg{},
		queue:    make(chan protocols.LoginEvent, loginQueue),
		stop:     make(chan struct{}),
	}
	n.cluster.HandleBroadcast(sessionsTopic, s.handle)
	s.wg.Add(1)
	go s.writer()
	n.sessions = s
	return s
}

// handle serves a sessions message from another node.
func (s *sessionService) handle(from string, msg []byte) {
	var m sessionMsg
	if err := json.Unmarshal(msg, &m); err != nil || len(m.User) > protocols.MaxCredentialLength {
		s.log.Debug("malformed sessions message from a peer", "from", from)
		return
	}
	switch m.Op {
	case sessionOpKill:
		var ended int
		if m.User == "" && m.Domain != "" {
			ended = s.registry.EndDomain(m.Domain, m.Credential)
		} else {
			ended = s.registry.End(m.User, m.Credential)
		}
		if ended > 0 {
			s.log.Info("sessions ended at a peer's request", "from", from, "sessions", ended)
		}
	case sessionOpList:
		b, err := json.Marshal(sessionMsg{Op: sessionOpOpen, User: m.User, ID: m.ID, Node: s.n.cfg.NodeID, Open: s.registry.List(m.User)})
		if err == nil {
			s.n.cluster.Broadcast(sessionsTopic, b)
		}
	case sessionOpOpen:
		s.pmu.Lock()
		ch := s.pending[m.ID]
		s.pmu.Unlock()
		if ch != nil {
			select {
			case ch <- m:
			default:
			}
		}
	}
}

// listAll returns the open sessions of user on this node and on every
// other node that answers within listWait, and the nodes that are up
// but did not answer.
func (s *sessionService) listAll(ctx context.Context, user string) (open []OpenSession, answered, missing []string) {
	self := s.n.cfg.NodeID
	for _, si := range s.registry.List(user) {
		open = append(open, OpenSession{Node: self, SessionInfo: si})
	}
	answered = []string{self}
	want := map[string]bool{}
	for _, ns := range s.n.cluster.Status().Nodes {
		if ns.ID != self && ns.Health == "up" {
			want[ns.ID] = true
		}
	}
	if len(want) == 0 {
		return open, answered, nil
	}
	var idb [8]byte
	_, _ = rand.Read(idb[:])
	id := hex.EncodeToString(idb[:])
	ch := make(chan sessionMsg, 64)
	s.pmu.Lock()
	s.pending[id] = ch
	s.pmu.Unlock()
	defer func() {
		s.pmu.Lock()
		delete(s.pending, id)
		s.pmu.Unlock()
	}()
	if b, err := json.Marshal(sessionMsg{Op: sessionOpList, User: user, ID: id}); err == nil {
		s.n.cluster.Broadcast(sessionsTopic, b)
	}
	timer := time.NewTimer(listWait)
	defer timer.Stop()
	for len(want) > 0 {
		select {
		case m := <-ch:
			if !want[m.Node] || m.User != user {
				continue
			}
			delete(want, m.Node)
			answered = append(answered, m.Node)
			for _, si := range m.Open {
				open = append(open, OpenSession{Node: m.Node, SessionInfo: si})
			}
		case <-timer.C:
			return open, answered, sortedSet(want)
		case <-ctx.Done():
			return open, answered, sortedSet(want)
		}
	}
	return open, answered, nil
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// close stops the history writer; records still queued are dropped.
func (s *sessionService) close() {
	if s == nil {
		return
	}
	s.once.Do(func() { close(s.stop) })
	s.wg.Wait()
}

// kill ends the user's sessions (of one credential, or all when it is
// "") on this node and, by broadcast, on every other node. It returns how
// many ended here.
func (s *sessionService) kill(user, credential string) int {
	b, err := json.Marshal(sessionMsg{Op: sessionOpKill, User: user, Credential: credential})
	if err == nil {
		s.n.cluster.Broadcast(sessionsTopic, b)
	}
	return s.registry.End(user, credential)
}

// killDomain ends the sessions of the users of domain logged in with
// credential ("" for every credential) here and on every other node.
func (s *sessionService) killDomain(domain, credential string) int {
	b, err := json.Marshal(sessionMsg{Op: sessionOpKill, Domain: domain, Credential: credential})
	if err == nil {
		s.n.cluster.Broadcast(sessionsTopic, b)
	}
	return s.registry.EndDomain(domain, credential)
}

// RecordLogin queues a login for the history unless the same user,
// protocol, address, credential and result was recorded within
// loginRecordEvery
// (protocols.LoginRecorder).
func (s *sessionService) RecordLogin(e protocols.LoginEvent) {
	if !s.admit(e) {
		return
	}
	select {
	case s.queue <- e:
	default:
		s.log.Debug("login history queue full; record dropped")
	}
}

// admit applies the throttle: it reports whether e is due for a record.
func (s *sessionService) admit(e protocols.LoginEvent) bool {
	k := loginKey{user: e.User, protocol: e.Protocol, remote: e.Remote.String(), credential: e.Credential, success: e.Success}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.last[k]; ok && e.Time.Sub(t) < loginRecordEvery && !e.Time.Before(t) {
		return false
	}
	if _, ok := s.last[k]; !ok && len(s.last) >= maxLoginThrottle {
		if !e.Time.Before(s.nextSweep) {
			for old, t := range s.last {
				if e.Time.Sub(t) >= loginRecordEvery {
					delete(s.last, old)
				}
			}
			s.nextSweep = e.Time.Add(time.Minute)
		}
		if len(s.last) >= maxLoginThrottle {
			return false // bounded: under a flood of distinct keys, stop recording
		}
	}
	s.last[k] = e.Time
	return true
}

// forget drops e's key from the throttle: a failed login of an unknown
// user, which is not recorded, must not take room there.
func (s *sessionService) forget(e protocols.LoginEvent) {
	k := loginKey{user: e.User, protocol: e.Protocol, remote: e.Remote.String(), credential: e.Credential, success: e.Success}
	s.mu.Lock()
	delete(s.last, k)
	s.mu.Unlock()
}

// writer writes queued records and prunes the history.
func (s *sessionService) writer() {
	defer s.wg.Done()
	prune := time.NewTicker(loginPruneEvery)
	defer prune.Stop()
	for {
		select {
		case <-s.stop:
			return
		case e := <-s.queue:
			s.write(e)
		case <-prune.C:
			s.prune()
		}
	}
}

func (s *sessionService) write(e protocols.LoginEvent) {
	ctx, cancel := stoppableContext(s.stop, loginWriteTimeout)
	defer cancel()
	rec := directory.LoginRecord{Time: e.Time.UTC(), Node: s.n.cfg.NodeID, Protocol: e.Protocol, Credential: e.Credential, Success: e.Success}
	if e.Remote.IsValid() {
		rec.Remote = e.Remote.String()
	}
	err := s.n.directory.RecordLogin(ctx, e.User, rec)
	switch {
	case err == nil:
	case errors.Is(err, schema.ErrNoSuchUser), errors.Is(err, schema.ErrInvalid):
		// Failed logins of unknown users are not recorded.
		s.forget(e)
	default:
		s.log.Warn("login record not written", "err", err)
	}
}

func (s *sessionService) prune() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k, err := s.n.directory.PruneLogins(ctx, s.n.now().Add(-s.n.loginHistoryRetention()))
	if err != nil {
		s.log.Warn("prune the login history", "err", err)
	} else if k > 0 {
		s.log.Info("login history pruned", "records", k)
	}
}

func (n *Node) loginHistoryRetention() time.Duration {
	if n.cfg.LoginHistoryRetention > 0 {
		return n.cfg.LoginHistoryRetention
	}
	return DefaultLoginHistoryRetention
}

// OpenSession is one open session and the node that holds it.
type OpenSession struct {
	Node string `json:"node"`
	protocols.SessionInfo
}

// SessionsReport is what "mailnode user sessions" shows.
type SessionsReport struct {
	User string `json:"user"`
	// Node is the node that answered. It asked every other node that is
	// up for its open sessions: Answered lists the nodes whose sessions
	// Open holds (Node first), Missing those that did not answer in time.
	Node     string                  `json:"node"`
	Answered []string                `json:"answered"`
	Missing  []string                `json:"missing,omitempty"`
	Open     []OpenSession           `json:"open"`
	Logins   []directory.LoginRecord `json:"logins"`
}

// killResult says how many sessions ended on the answering node.
type killResult struct {
	Node  string `json:"node"`
	Ended int    `json:"ended"`
}

// sessionsAdmin serves the session endpoints and ends the sessions a
// successful credential change invalidates; everything else goes to
// next.
func (n *Node) sessionsAdmin(next http.Handler, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	user := func(w http.ResponseWriter, r *http.Request) (string, bool) {
		addr, _, err := schema.CanonicalAddress(r.PathValue("address"))
		if err != nil {
			writeBackupError(w, http.StatusBadRequest, err)
			return "", false
		}
		if n.sessions == nil {
			writeBackupError(w, http.StatusServiceUnavailable, errors.New("the node is not serving yet"))
			return "", false
		}
		return addr, true
	}
	mux.HandleFunc("GET /v1/users/{address}/sessions", func(w http.ResponseWriter, r *http.Request) {
		addr, ok := user(w, r)
		if !ok {
			return
		}
		since := n.now().Add(-n.loginHistoryRetention())
		if v := r.URL.Query().Get("since"); v != "" {
			sec, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				writeBackupError(w, http.StatusBadRequest, fmt.Errorf("since %q: want Unix seconds", v))
				return
			}
			since = time.Unix(sec, 0)
		}
		ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
		defer cancel()
		logins, err := n.directory.Logins(ctx, addr, since)
		if errors.Is(err, schema.ErrNoSuchUser) {
			writeBackupError(w, http.StatusNotFound, err)
			return
		}
		if err != nil {
			writeBackupError(w, http.StatusServiceUnavailable, err)
			return
		}
		if logins == nil {
			logins = []directory.LoginRecord{}
		}
		open, answered, missing := n.sessions.listAll(ctx, addr)
		if open == nil {
			open = []OpenSession{}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(SessionsReport{User: addr, Node: n.cfg.NodeID, Answered: answered, Missing: missing, Open: open, Logins: logins})
	})
	mux.HandleFunc("POST /v1/users/{address}/sessions/kill", func(w http.ResponseWriter, r *http.Request) {
		addr, ok := user(w, r)
		if !ok {
			return
		}
		ended := n.sessions.kill(addr, "")
		log.Info("admin request", "route", r.Pattern, "sessions_ended", ended)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(killResult{Node: n.cfg.NodeID, Ended: ended})
	})
	// Credential changes: once the handler succeeded, the sessions the
	// old credentials opened end everywhere.
	killAfter := func(credential func(*http.Request) string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			// The inner muxes overwrite the request's path values.
			pattern, address, cred := r.Pattern, r.PathValue("address"), credential(r)
			rec := &statusRecorder{ResponseWriter: w}
			next.ServeHTTP(rec, r)
			if rec.status >= 300 || n.sessions == nil {
				return
			}
			addr, _, err := schema.CanonicalAddress(address)
			if err != nil {
				return
			}
			ended := n.sessions.kill(addr, cred)
			log.Info("sessions ended after a credential change", "route", pattern, "sessions_ended", ended)
		}
	}
	all := func(*http.Request) string { return "" }
	mux.Handle("PUT /v1/users/{address}/password", killAfter(all))
	mux.Handle("DELETE /v1/users/{address}", killAfter(all))
	mux.Handle("POST /v1/users/{address}/mfa/confirm", killAfter(all))
	mux.Handle("POST /v1/users/{address}/mfa/disable", killAfter(all))
	mux.Handle("DELETE /v1/users/{address}/app-passwords/{name}", killAfter(func(r *http.Request) string {
		return r.PathValue("name")
	}))
	// A domain that starts requiring MFA refuses the account password:
	// the sessions it opened end.
	mux.HandleFunc("PUT /v1/domains/{name}/mfa", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		peek, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(peek), r.Body))
		var req struct {
			Policy string `json:"policy"`
		}
		_ = json.Unmarshal(peek, &req)
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status >= 300 || n.sessions == nil || req.Policy != admin.MFARequire {
			return
		}
		domain, err := schema.CanonicalDomain(name)
		if err != nil {
			return
		}
		ended := n.sessions.killDomain(domain, protocols.CredentialPassword)
		log.Info("sessions ended after a credential change", "route", "PUT /v1/domains/{name}/mfa", "sessions_ended", ended)
	})
	mux.Handle("/", next)
	return mux
}

// sessionsCommand is "mailnode user sessions".
func (c CLI) sessionsCommand(ctx context.Context, args []string) error {
	fs := newFlagSet("user sessions")
	data := fs.String("data", "", "data directory of the node")
	config := fs.String("config", "", "config file")
	kill := fs.Bool("kill", false, "end every open session of the user on every node")
	since := fs.Duration("since", 0, "how far back to list logins (default: the whole retention)")
	asJSON := fs.Bool("json", false, "JSON output")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *since < 0 {
		return fmt.Errorf("%w: user sessions [--kill] [--since DURATION] [--json] ADDRESS", errUsage)
	}
	dir, err := dataDirArg("user sessions", *data, *config)
	if err != nil {
		return err
	}
	client := newBackupClient(dir)
	defer client.close()
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	path := "/v1/users/" + url.PathEscape(pos[0]) + "/sessions"
	if *kill {
		resp, err := client.requestBody(ctx, http.MethodPost, path+"/kill", []byte("{}"))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var res killResult
		if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&res); err != nil {
			return fmt.Errorf("admin socket: %w", err)
		}
		if *asJSON {
			return json.NewEncoder(c.Stdout).Encode(res)
		}
		fmt.Fprintf(c.Stdout, "%d session(s) of %s ended on %s; the other nodes were told to end theirs\n", res.Ended, pos[0], res.Node)
		return nil
	}
	if *since > 0 {
		path += "?since=" + strconv.FormatInt(time.Now().Add(-*since).Unix(), 10)
	}
	resp, err := client.request(ctx, http.MethodGet, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var rep SessionsReport
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&rep); err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(c.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return printSessions(c, rep)
}

// printSessions prints a sessions report as two tables.
func printSessions(c CLI, rep SessionsReport) error {
	tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Open sessions (nodes that answered: %s", strings.Join(rep.Answered, ", "))
	if len(rep.Missing) > 0 {
		fmt.Fprintf(tw, "; no answer in time from: %s", strings.Join(rep.Missing, ", "))
	}
	fmt.Fprintln(tw, "):")
	if len(rep.Open) == 0 {
		fmt.Fprintln(tw, "  none")
	} else {
		fmt.Fprintln(tw, "  SINCE\tNODE\tPROTOCOL\tADDRESS\tCREDENTIAL")
		for _, s := range rep.Open {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", s.Since.UTC().Format(time.RFC3339), s.Node, s.Protocol, orDash(s.Remote), s.Credential)
		}
	}
	fmt.Fprintln(tw, "\nRecent logins (all nodes):")
	if len(rep.Logins) == 0 {
		fmt.Fprintln(tw, "  none")
	} else {
		fmt.Fprintln(tw, "  TIME\tNODE\tPROTOCOL\tADDRESS\tCREDENTIAL\tRESULT")
		for _, l := range rep.Logins {
			result := "failed"
			if l.Success {
				result = "ok"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", l.Time.UTC().Format(time.RFC3339), l.Node, l.Protocol, orDash(l.Remote), orDash(l.Credential), result)
		}
	}
	return tw.Flush()
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}

// stoppableContext bounds a background write by timeout and ends it
// early when stop closes (the node stops).
func stoppableContext(stop <-chan struct{}, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
