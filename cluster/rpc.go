package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/cluster/transport"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// The internal RPC service: HTTP/1.1 over the cluster port's RPC streams
// (mutual TLS, peers are cluster nodes). Bodies are the command codec for
// commands and gob for everything else; both ends are this program.
const (
	rpcApply     = "/rpc/apply/"
	rpcQuery     = "/rpc/query/"
	rpcReadIndex = "/rpc/read-index/"
	rpcWatch     = "/rpc/watch/"
	rpcPing      = "/rpc/ping"
	rpcState     = "/rpc/state/"

	// maxRPCBody bounds a request body: a command carries at most about a
	// MiB of sealed message chunks.
	maxRPCBody = 64 << 20

	// maxQueryAnswer bounds a query answer: a message's sealed chunks
	// (up to mailstore.MaxMessageSize) or a large mailbox's records; gob,
	// which answers came in before, refuses more than this too.
	maxQueryAnswer = 1 << 30

	// queryResultType is the media type of a query answer in
	// raftstore.QueryResult's own encoding. A node asks for it (Accept)
	// and decodes by the answer's Content-Type: a node from before it
	// answers gob and ignores the header, so either can talk to either
	// during a rolling upgrade.
	queryResultType = "application/x-mailcluster-query-result"
	// queryRequestType is the media type of a query in raftstore.Query's
	// encoding, after the minimum index as a uvarint.
	queryRequestType = "application/x-mailcluster-query"

	hdrIndex      = "X-Index"
	hdrLeaderID   = "X-Leader-Id"
	hdrLeaderAddr = "X-Leader-Addr"
	hdrStateInfo  = "X-State-Info"
	// hdrHeld asks for a query's answer from the replica of the node
	// asked, whatever its role (queryCopy): an immutable query's when
	// that replica holds what it names (statusNotHeld when not), any
	// other's once the replica has applied the request's minimum index.
	// A node from before it ignores the header and answers as the
	// leader, or not at all: either is a replica's own copy, or none. A
	// node that knew it only for immutable queries refuses others
	// (400).
	hdrHeld       = "X-Held"
	statusNotHeld = http.StatusNotFound

	// statusNotLeader answers a request sent to a replica that does not
	// lead (421 Misdirected Request), with the leader it knows.
	statusNotLeader = http.StatusMisdirectedRequest
)

// remoteError is a failure reported by another node.
type remoteError struct {
	status    int
	msg       string
	temporary bool
}

func (e *remoteError) Error() string { return fmt.Sprintf("remote: %d %s", e.status, e.msg) }

// startServers serves the RPC and join streams of the cluster port.
func (c *Cluster) startServers() {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+rpcApply+"{shard}", c.serveApply)
	mux.HandleFunc("POST "+rpcQuery+"{shard}", c.serveQuery)
	mux.HandleFunc("GET "+rpcReadIndex+"{shard}", c.serveReadIndex)
	mux.HandleFunc("GET "+rpcWatch+"{shard}/{user}", c.serveWatch)
	mux.HandleFunc("GET "+rpcPing, c.servePing)
	mux.HandleFunc("GET "+rpcState+"{shard}", c.serveState)
	mux.HandleFunc("POST "+rpcBroadcast+"{topic}", c.serveBroadcast)
	rpcSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	joinMux := http.NewServeMux()
	joinMux.HandleFunc("POST /join", c.serveJoin)
	joinSrv := &http.Server{Handler: joinMux, ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, conn net.Conn) context.Context {
			return context.WithValue(ctx, joinConnKey{}, conn)
		}}
	c.srv = []*http.Server{rpcSrv, joinSrv}
	go rpcSrv.Serve(c.trans.RPCListener())
	go joinSrv.Serve(c.trans.JoinListener())
}

type joinConnKey struct{}

func shardParam(w http.ResponseWriter, r *http.Request) (uint32, bool) {
	n, err := strconv.ParseUint(r.PathValue("shard"), 10, 32)
	if err != nil {
		http.Error(w, "bad shard", http.StatusBadRequest)
		return 0, false
	}
	return uint32(n), true
}

// localReplica returns this node's replica of the shard a request names,
// answering for it when there is none.
func (c *Cluster) localReplica(w http.ResponseWriter, r *http.Request) (*raftstore.Shard, bool) {
	n, ok := shardParam(w, r)
	if !ok {
		return nil, false
	}
	s := c.replica(n)
	if s == nil {
		id, addr := c.leaderOf(n)
		notLeader(w, id, addr)
		return nil, false
	}
	return s, true
}

func notLeader(w http.ResponseWriter, id, addr string) {
	w.Header().Set(hdrLeaderID, id)
	w.Header().Set(hdrLeaderAddr, addr)
	http.Error(w, "not the leader", statusNotLeader)
}

// answerError reports an error of a local replica to the calling node.
func answerError(w http.ResponseWriter, s *raftstore.Shard, err error) {
	var nl *notLeaderError
	switch {
	case errors.As(err, &nl):
		notLeader(w, nl.id, nl.addr)
	case errors.Is(err, raftstore.ErrNotLeader):
		id, addr := s.Leader()
		notLeader(w, id, addr)
	default:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	}
}

func (c *Cluster) serveApply(w http.ResponseWriter, r *http.Request) {
	s, ok := c.localReplica(w, r)
	if !ok {
		return
	}
	body, err := readBody(w, r)
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	cmd, err := schema.DecodeCommand(body)
	if err != nil {
		http.Error(w, "bad command", http.StatusBadRequest)
		return
	}
	res, err := s.Apply(r.Context(), cmd)
	if err != nil && res == nil {
		answerError(w, s, err)
		return
	}
	w.Header().Set(hdrIndex, strconv.FormatUint(res.Index, 10))
	w.Write(res.Marshal())
}

// readBody reads a request body of at most maxRPCBody bytes. A body
// whose length the request states is read into one buffer of that size:
// io.ReadAll would grow its buffer from 512 bytes, allocating, zeroing
// and copying a command of a MiB of message chunks about a dozen times.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, maxRPCBody)
	if r.ContentLength < 0 || r.ContentLength > maxRPCBody {
		return io.ReadAll(body)
	}
	b := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(body, b); err != nil {
		return nil, err
	}
	return b, nil
}

// queryRequest is the body of a query RPC.
type queryRequest struct {
	Query    raftstore.Query
	MinIndex uint64
}

func (c *Cluster) serveQuery(w http.ResponseWriter, r *http.Request) {
	s, ok := c.localReplica(w, r)
	if !ok {
		return
	}
	req, err := readQueryRequest(w, r)
	if err != nil {
		http.Error(w, "bad query", http.StatusBadRequest)
		return
	}
	if r.Header.Get(hdrHeld) != "" {
		serveQueryHeld(w, r, s, req)
		return
	}
	res, err := queryLocal(r.Context(), s, req.Query, req.MinIndex)
	if err != nil && (res == nil || res.Code == schema.CodeOK) {
		// Only a data-model error (no such mailbox...) travels in the
		// answer's Code; any other failure (a commit that hangs, a
		// replica closed or broken) sent as an answer would read as an
		// empty success on the other side.
		answerError(w, s, err)
		return
	}
	writeQueryResult(w, r, res)
}

// serveQueryHeld answers a query from this node's replica, leader or
// not (see hdrHeld and queryCopy).
func serveQueryHeld(w http.ResponseWriter, r *http.Request, s *raftstore.Shard, req queryRequest) {
	res, held, err := queryCopy(r.Context(), s, req.Query, req.MinIndex)
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	case !held:
		http.Error(w, "not held by this replica", statusNotHeld)
	default:
		writeQueryResult(w, r, res)
	}
}

// readQueryRequest decodes a query by its Content-Type: raftstore's
// encoding after the minimum index, or gob from a node that does not
// know this one speaks it (see rpcClient.query).
func readQueryRequest(w http.ResponseWriter, r *http.Request) (queryRequest, error) {
	var req queryRequest
	if r.Header.Get("Content-Type") != queryRequestType {
		err := gob.NewDecoder(http.MaxBytesReader(w, r.Body, maxRPCBody)).Decode(&req)
		return req, err
	}
	b, err := readBody(w, r)
	if err != nil {
		return req, err
	}
	idx, n := binary.Uvarint(b)
	if n <= 0 {
		return req, errors.New("query without its index")
	}
	req.MinIndex = idx
	return req, req.Query.Unmarshal(b[n:])
}

// writeQueryResult answers a query in the encoding the asking node
// accepts: raftstore's own, or gob for a node from before it.
func writeQueryResult(w http.ResponseWriter, r *http.Request, res *raftstore.QueryResult) {
	if r.Header.Get("Accept") == queryResultType {
		b := res.Marshal()
		w.Header().Set("Content-Type", queryResultType)
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
		return
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(res); err != nil {
		http.Error(w, "encode", http.StatusInternalServerError)
		return
	}
	w.Write(buf.Bytes())
}

// readQueryResult decodes a query answer by its Content-Type (see
// queryResultType).
func readQueryResult(resp *http.Response) (*raftstore.QueryResult, error) {
	res := &raftstore.QueryResult{}
	if resp.Header.Get("Content-Type") != queryResultType {
		if err := gob.NewDecoder(resp.Body).Decode(res); err != nil {
			return nil, fmt.Errorf("decode query result: %v", err)
		}
		return res, nil
	}
	if resp.ContentLength < 0 || resp.ContentLength > maxQueryAnswer {
		return nil, fmt.Errorf("query result of %d bytes", resp.ContentLength)
	}
	body := make([]byte, resp.ContentLength)
	if _, err := io.ReadFull(resp.Body, body); err != nil {
		return nil, fmt.Errorf("read query result: %v", err)
	}
	if err := res.Unmarshal(body); err != nil {
		return nil, fmt.Errorf("decode query result: %v", err)
	}
	return res, nil
}

// serveReadIndex answers the index a replica must have applied to see
// everything committed before the request: the leader's applied index,
// once it may serve reads (it still leads, and its state holds every
// entry committed before its term and before the request).
func (c *Cluster) serveReadIndex(w http.ResponseWriter, r *http.Request) {
	s, ok := c.localReplica(w, r)
	if !ok {
		return
	}
	if err := s.ReadyToRead(r.Context()); err != nil {
		answerError(w, s, err)
		return
	}
	w.Header().Set(hdrIndex, strconv.FormatUint(s.PublishedIndex(), 10))
}

// serveState streams a consistent copy of a replica's state (for a
// backup taken by another node), once the replica has caught up with its
// leader.
func (c *Cluster) serveState(w http.ResponseWriter, r *http.Request) {
	s, ok := c.localReplica(w, r)
	if !ok {
		return
	}
	if err := c.catchUp(r.Context(), s.ID()); err != nil {
		answerError(w, s, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Trailer", hdrStateInfo)
	info, err := s.WriteState(w)
	if err != nil {
		c.log.Warn("stream shard state", "shard", s.ID(), "err", err)
		return // no trailer: the caller sees the copy is incomplete
	}
	b, _ := json.Marshal(info)
	w.Header().Set(hdrStateInfo, string(b))
}

// rpcClient calls other nodes' RPC service.
type rpcClient struct {
	http  *http.Client
	trans *transport.Transport
	// current holds the addresses of nodes that answered a query in
	// raftstore's encoding, and so read queries in it too.
	current sync.Map
}

func newRPCClient(t *transport.Transport) *rpcClient {
	tr := &http.Transport{
		DialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return t.Dial(ctx, addr, transport.KindRPC, 0)
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &rpcClient{http: &http.Client{Transport: tr}, trans: t}
}

func (rc *rpcClient) close() { rc.http.CloseIdleConnections() }

// maxDrain bounds what closeBody reads past a decoded answer.
const maxDrain = 64 << 10

// closeBody reads the rest of a response body and closes it. A decoder
// (gob, JSON) stops at the end of its value, before it has seen the
// body's end, and net/http closes a connection whose body was not read
// to the end: each such answer would cost the next request a new TLS
// connection to the peer (in a cluster3 profile of imap-mixed, a node
// spent 2.5 % of its CPU dialling).
func closeBody(body io.ReadCloser) {
	io.Copy(io.Discard, io.LimitReader(body, maxDrain))
	body.Close()
}

func rpcURL(addr, path string) string { return "https://" + addr + path }

// do sends a request and turns a failure status into an error.
func (rc *rpcClient) do(req *http.Request) (*http.Response, error) {
	resp, err := rc.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer closeBody(resp.Body)
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode == statusNotLeader {
		return nil, &notLeaderError{id: resp.Header.Get(hdrLeaderID), addr: resp.Header.Get(hdrLeaderAddr)}
	}
	return nil, &remoteError{status: resp.StatusCode, msg: string(bytes.TrimSpace(msg)),
		temporary: resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode >= 500}
}

func (rc *rpcClient) apply(ctx context.Context, addr string, n uint32, cmd schema.Command) (*schema.Result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rpcURL(addr, rpcApply+strconv.FormatUint(uint64(n), 10)),
		bytes.NewReader(schema.EncodeCommand(cmd)))
	if err != nil {
		return nil, err
	}
	resp, err := rc.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRPCBody))
	if err != nil {
		return nil, err
	}
	res := &schema.Result{}
	if err := res.Unmarshal(body); err != nil {
		return nil, fmt.Errorf("decode result: %v", err) // not schema.ErrInvalid: a transport fault
	}
	res.Index, _ = strconv.ParseUint(resp.Header.Get(hdrIndex), 10, 64)
	return res, nil
}

// query runs a read on the node at addr. The query goes in raftstore's
// encoding to a node known to speak it (it answered in it before), else
// in gob; a node that refuses the encoding (one rolled back to a version
// from before) is asked again in gob and no longer counted as knowing it.
func (rc *rpcClient) query(ctx context.Context, addr string, n uint32, q raftstore.Query, minIndex uint64) (*raftstore.QueryResult, error) {
	return rc.queryAs(ctx, addr, n, q, minIndex, false)
}

// queryHeld runs a query on the replica of the node at addr, whatever
// its role, once it has applied minIndex (see hdrHeld); errNotHeld when
// that replica lacks what an immutable query names.
func (rc *rpcClient) queryHeld(ctx context.Context, addr string, n uint32, q raftstore.Query, minIndex uint64) (*raftstore.QueryResult, error) {
	res, err := rc.queryAs(ctx, addr, n, q, minIndex, true)
	if re := (*remoteError)(nil); errors.As(err, &re) && re.status == statusNotHeld {
		return nil, errNotHeld
	}
	return res, err
}

// errNotHeld says a replica asked for its own copy lacks it.
var errNotHeld = errors.New("not held by that replica")

func (rc *rpcClient) queryAs(ctx context.Context, addr string, n uint32, q raftstore.Query, minIndex uint64, held bool) (*raftstore.QueryResult, error) {
	_, current := rc.current.Load(addr)
	res, err := rc.queryOnce(ctx, addr, n, q, minIndex, current, held)
	if re := (*remoteError)(nil); current && errors.As(err, &re) && re.status == http.StatusBadRequest {
		rc.current.Delete(addr)
		return rc.queryOnce(ctx, addr, n, q, minIndex, false, held)
	}
	return res, err
}

func (rc *rpcClient) queryOnce(ctx context.Context, addr string, n uint32, q raftstore.Query, minIndex uint64, encoded, held bool) (*raftstore.QueryResult, error) {
	var body []byte
	if encoded {
		body = append(binary.AppendUvarint(nil, minIndex), q.Marshal()...)
	} else {
		var buf bytes.Buffer
		if err := gob.NewEncoder(&buf).Encode(queryRequest{Query: q, MinIndex: minIndex}); err != nil {
			return nil, err
		}
		body = buf.Bytes()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rpcURL(addr, rpcQuery+strconv.FormatUint(uint64(n), 10)), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if encoded {
		req.Header.Set("Content-Type", queryRequestType)
	}
	req.Header.Set("Accept", queryResultType)
	if held {
		req.Header.Set(hdrHeld, "1")
	}
	resp, err := rc.do(req)
	if err != nil {
		return nil, err
	}
	defer closeBody(resp.Body)
	if !encoded && resp.Header.Get("Content-Type") == queryResultType {
		rc.current.Store(addr, struct{}{})
	}
	return readQueryResult(resp)
}

func (rc *rpcClient) readIndex(ctx context.Context, addr string, n uint32) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rpcURL(addr, rpcReadIndex+strconv.FormatUint(uint64(n), 10)), nil)
	if err != nil {
		return 0, err
	}
	resp, err := rc.do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return strconv.ParseUint(resp.Header.Get(hdrIndex), 10, 64)
}

// state copies a replica's state on another node to w.
func (rc *rpcClient) state(ctx context.Context, addr string, n uint32, w io.Writer) (raftstore.StateInfo, error) {
	var info raftstore.StateInfo
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rpcURL(addr, rpcState+strconv.FormatUint(uint64(n), 10)), nil)
	if err != nil {
		return info, err
	}
	resp, err := rc.do(req)
	if err != nil {
		return info, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return info, err
	}
	t := resp.Trailer.Get(hdrStateInfo)
	if t == "" {
		return info, errors.New("state copy ended early")
	}
	return info, json.Unmarshal([]byte(t), &info)
}

// PingResponse is what a node reports about itself to the others: its
// record and the state of every replica it keeps.
type PingResponse struct {
	NodeID  string             `json:"node_id"`
	Region  string             `json:"region"`
	Address string             `json:"address"`
	Version string             `json:"version"`
	Time    time.Time          `json:"time"`
	Shards  []raftstore.Status `json:"shards"`
	// Leaving is set while the node stops: no group hands it leadership.
	Leaving bool `json:"leaving,omitempty"`
	// Repairing names the node's replicas closed for a repair, by shard:
	// "rebuilding" (a corrupt state file, replaced by a copy of another
	// replica's) or "reopening" (after a failed write, to replay the log).
	Repairing map[uint32]string `json:"repairing,omitempty"`
	// Withheld lists the shards whose replica the node keeps closed
	// because it lost its Raft state while a voter (see
	// Cluster.manageReplicas): the group's leader makes it a non-voter.
	Withheld []uint32 `json:"withheld,omitempty"`
}

// Ping asks the node at a cluster address for its report (what the health
// checks do every second).
func (c *Cluster) Ping(ctx context.Context, addr string) (PingResponse, error) {
	return c.rpc.ping(ctx, addr)
}

func (c *Cluster) servePing(w http.ResponseWriter, r *http.Request) {
	resp := c.selfReport()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// selfReport is this node's PingResponse.
func (c *Cluster) selfReport() PingResponse {
	resp := PingResponse{NodeID: c.cfg.NodeID, Region: c.cfg.Region, Address: c.cfg.Advertise, Version: c.cfg.Version, Time: time.Now().UTC()}
	select {
	case <-c.closing:
		resp.Leaving = true
	default:
	}
	for _, s := range c.Shards() {
		resp.Shards = append(resp.Shards, s.Status())
	}
	c.mu.RLock()
	for n, state := range c.repairing {
		if resp.Repairing == nil {
			resp.Repairing = map[uint32]string{}
		}
		resp.Repairing[n] = state
	}
	for n := range c.withheld {
		resp.Withheld = append(resp.Withheld, n)
	}
	c.mu.RUnlock()
	return resp
}

func (rc *rpcClient) ping(ctx context.Context, addr string) (PingResponse, error) {
	var out PingResponse
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rpcURL(addr, rpcPing), nil)
	if err != nil {
		return out, err
	}
	resp, err := rc.do(req)
	if err != nil {
		return out, err
	}
	defer closeBody(resp.Body)
	err = json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&out)
	return out, err
}
