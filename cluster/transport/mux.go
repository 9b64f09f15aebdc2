package transport

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Kind says what a stream on the cluster port carries.
type Kind uint8

// Stream kinds.
const (
	// KindRaft carries one Raft group's RPCs; the header names the group.
	KindRaft Kind = 1
	// KindRPC carries the internal RPC service (HTTP/1.1).
	KindRPC Kind = 2
	// KindJoin carries a join request from a node that has no certificate
	// yet (HTTP/1.1).
	KindJoin Kind = 3
)

const (
	headerLen        = 8
	headerVersion    = 1
	handshakeTimeout = 10 * time.Second
	// dispatchTimeout bounds how long an accepted stream waits for its
	// consumer (a Raft group or the RPC server) to take it.
	dispatchTimeout = 10 * time.Second
	// layerWait bounds how long a stream for a Raft group this node has
	// no layer for yet waits for one before it is refused. A leader
	// starts replicating to a new replica as soon as the group's
	// configuration names it, which comes before the replica opens on
	// its node (at a join, when placement moves a replica, while a node
	// starts): a stream held until then is served instead of failing and
	// putting the leader into its backoff.
	layerWait = 3 * time.Second
)

var headerMagic = [2]byte{'M', 'C'}

// ErrClosed is returned by listeners and dials after Close. It is also
// net.ErrClosed to errors.Is, as a closed net.Listener's error is, so
// that code which only knows the net package (Raft's log adapter) tells
// a node's own stop from a peer's failure.
var ErrClosed error = closedError{}

type closedError struct{}

func (closedError) Error() string        { return "transport: closed" }
func (closedError) Is(target error) bool { return target == net.ErrClosed }

// ErrBlocked is returned when a fault injected by a test or by removal
// forbids talking to a peer.
var ErrBlocked = errors.New("transport: peer blocked")

// Config describes a node's cluster port.
type Config struct {
	// Listen is the address to bind (host:port; port 0 picks one).
	Listen string
	// Listener, when set, is the cluster port already bound (Listen is
	// then ignored): a node that binds port 0 to learn its address keeps
	// the socket, so no other program can take the port in between.
	Listener net.Listener
	// Advertise is the address other nodes dial ("" means the bound
	// address). Raft groups report it as theirs: a leader bound to
	// 0.0.0.0 must not tell its followers to dial 0.0.0.0.
	Advertise string
	// Identity is the node's certificate and the cluster CA.
	Identity *Identity
	// Allow reports whether a peer whose certificate verified may talk to
	// this node; nil allows every node of the cluster. Removed nodes are
	// refused with it.
	Allow  func(nodeID string) bool
	Logger *slog.Logger
}

// Transport is a node's cluster port: the listener, the dialer, the
// per-group Raft stream layers and the injected faults.
type Transport struct {
	cfg    Config
	log    *slog.Logger
	ln     net.Listener
	server *tls.Config
	client *tls.Config

	rpc  *chanListener
	join *chanListener

	mu     sync.Mutex
	layers map[uint32]*chanListener
	// layerAdded, under mu, is closed (and replaced) when a Raft layer
	// opens, and when the transport closes: it wakes the streams waiting
	// for their group's layer.
	layerAdded chan struct{}
	layerWait  time.Duration // layerWait, but for tests
	waiting    atomic.Int32  // streams waiting for their group's layer
	conns      map[*trackedConn]struct{}
	blocked    map[string]bool
	isolate    bool
	// silent holds all traffic without closing anything (Silence);
	// voiced, under mu, is closed when the silence is lifted.
	silent atomic.Bool
	voiced chan struct{}
	peerOf map[string]string // dialed address -> node id, learned at handshake
	closed bool

	opened [KindRPC + 1]atomic.Uint64 // Raft and RPC streams dialled, by kind

	wg sync.WaitGroup
}

// Listen opens the cluster port and starts accepting streams.
func Listen(cfg Config) (*Transport, error) {
	if cfg.Identity == nil {
		return nil, errors.New("transport: no identity")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Transport{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "transport"),
		layers:     make(map[uint32]*chanListener),
		layerAdded: make(chan struct{}),
		layerWait:  layerWait,
		conns:      make(map[*trackedConn]struct{}),
		blocked:    make(map[string]bool),
		peerOf:     make(map[string]string),
	}
	t.server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cfg.Identity.Cert},
		// Verified by hand in accept: a join stream has no certificate.
		ClientAuth: tls.RequestClientCert,
	}
	t.client = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cfg.Identity.Cert},
		// The chain is verified against the cluster CA in dial; peers are
		// known by the node id in their certificate, not by host name.
		InsecureSkipVerify: true,
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("cluster port %s: %w", cfg.Listen, err)
		}
	}
	t.ln = ln
	t.rpc = newChanListener(ln.Addr(), nil)
	t.join = newChanListener(ln.Addr(), nil)
	t.wg.Add(1)
	go t.acceptLoop()
	return t, nil
}

// Addr returns the bound address of the cluster port.
func (t *Transport) Addr() net.Addr { return t.ln.Addr() }

// NodeID returns the id in this node's certificate.
func (t *Transport) NodeID() string { return t.cfg.Identity.NodeID }

// RPCListener returns the listener of internal RPC streams.
func (t *Transport) RPCListener() net.Listener { return t.rpc }

// JoinListener returns the listener of join streams.
func (t *Transport) JoinListener() net.Listener { return t.join }

func (t *Transport) acceptLoop() {
	defer t.wg.Done()
	for {
		raw, err := t.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Warn("accept on cluster port", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.handle(raw)
		}()
	}
}

// handle runs the TLS handshake and reads the header of one accepted
// stream, then hands it to its consumer.
func (t *Transport) handle(raw net.Conn) {
	if err := t.waitVoice(time.Now().Add(handshakeTimeout), nil); err != nil {
		raw.Close() // the dialler saw a handshake that never came
		return
	}
	raw.SetDeadline(time.Now().Add(handshakeTimeout))
	batch := newRecordBatcher(raw)
	conn := tls.Server(batch, t.server)
	if err := conn.Handshake(); err != nil {
		t.log.Debug("cluster port handshake failed", "remote", raw.RemoteAddr().String(), "err", err)
		raw.Close()
		return
	}
	var hdr [headerLen]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil || hdr[0] != headerMagic[0] || hdr[1] != headerMagic[1] || hdr[2] != headerVersion {
		t.log.Debug("cluster port: bad stream header", "remote", raw.RemoteAddr().String())
		conn.Close()
		return
	}
	kind, shard := Kind(hdr[3]), binary.BigEndian.Uint32(hdr[4:])
	raw.SetDeadline(time.Time{})

	peer := ""
	if kind != KindJoin {
		id, err := t.cfg.Identity.verifyPeer(conn.ConnectionState())
		if err != nil {
			t.log.Warn("cluster port: refused a peer", "remote", raw.RemoteAddr().String(), "err", err)
			conn.Close()
			return
		}
		if err := t.admit(id); err != nil {
			t.log.Debug("cluster port: refused a peer", "peer", id, "err", err)
			conn.Close()
			return
		}
		peer = id
	}
	tc, err := t.track(conn, batch, peer)
	if err != nil {
		conn.Close()
		return
	}
	var target *chanListener
	switch kind {
	case KindRaft:
		target = t.awaitLayer(shard, time.Now().Add(t.layerWait))
	case KindRPC:
		target = t.rpc
	case KindJoin:
		target = t.join
	}
	if target == nil || !target.deliver(tc) {
		tc.Close()
	}
}

// awaitLayer returns shard's Raft layer, waiting for it to open until
// deadline; nil if it did not, or if the transport closed.
func (t *Transport) awaitLayer(shard uint32, deadline time.Time) *chanListener {
	l, closed, added := t.layerOf(shard)
	if l != nil || closed {
		return l
	}
	t.waiting.Add(1)
	defer t.waiting.Add(-1)
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		select {
		case <-added:
		case <-timer.C:
			return nil
		}
		if l, closed, added = t.layerOf(shard); l != nil || closed {
			return l
		}
	}
}

// layerOf returns shard's Raft layer (nil if none is open), whether the
// transport is closed, and the channel closed when the next layer opens.
func (t *Transport) layerOf(shard uint32) (*chanListener, bool, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.layers[shard], t.closed, t.layerAdded
}

// admit reports why a verified peer may not talk, or nil.
func (t *Transport) admit(id string) error {
	t.mu.Lock()
	blocked := t.isolate || t.blocked[id]
	t.mu.Unlock()
	if blocked {
		return ErrBlocked
	}
	if t.cfg.Allow != nil && !t.cfg.Allow(id) {
		return fmt.Errorf("node %s is not a member of the cluster", id)
	}
	return nil
}

// Dial opens a stream of kind (and Raft group shard) to the cluster port
// at addr, verifying that the peer belongs to the cluster.
func (t *Transport) Dial(ctx context.Context, addr string, kind Kind, shard uint32) (net.Conn, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrClosed
	}
	if id, ok := t.peerOf[addr]; ok && (t.isolate || t.blocked[id]) {
		t.mu.Unlock()
		return nil, fmt.Errorf("dial %s: %w", addr, ErrBlocked)
	}
	if t.isolate {
		t.mu.Unlock()
		return nil, fmt.Errorf("dial %s: %w", addr, ErrBlocked)
	}
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := t.waitVoiceCtx(ctx); err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	batch := newRecordBatcher(raw)
	conn := tls.Client(batch, t.client)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	id, err := t.cfg.Identity.verifyPeer(conn.ConnectionState())
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	t.mu.Lock()
	t.peerOf[addr] = id
	t.mu.Unlock()
	if err := t.admit(id); err != nil {
		conn.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if err := writeHeader(ctx, conn, kind, shard); err != nil {
		conn.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	tc, err := t.track(conn, batch, id)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if int(kind) < len(t.opened) {
		t.opened[kind].Add(1)
	}
	return tc, nil
}

// Opened returns how many streams of a kind this node has dialled. Each
// is a TLS handshake with a peer; a count that climbs with the load
// means connections are not being reused.
func (t *Transport) Opened(kind Kind) uint64 {
	if int(kind) >= len(t.opened) {
		return 0
	}
	return t.opened[kind].Load()
}

func writeHeader(ctx context.Context, conn net.Conn, kind Kind, shard uint32) error {
	var hdr [headerLen]byte
	hdr[0], hdr[1], hdr[2], hdr[3] = headerMagic[0], headerMagic[1], headerVersion, byte(kind)
	binary.BigEndian.PutUint32(hdr[4:], shard)
	if dl, ok := ctx.Deadline(); ok {
		conn.SetWriteDeadline(dl)
	}
	_, err := conn.Write(hdr[:])
	conn.SetWriteDeadline(time.Time{})
	return err
}

// DialJoin opens a join stream to a cluster node without a client
// certificate. The server's certificate is not trusted by this call: the
// join protocol proves both sides know the join token, bound to this
// TLS session (see ExportKey).
func DialJoin(ctx context.Context, addr string) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	d := &tls.Dialer{Config: &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	conn := c.(*tls.Conn)
	if err := writeHeader(ctx, conn, KindJoin, 0); err != nil {
		conn.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, nil
}

// ExportKey derives a secret bound to one TLS session (RFC 8446 section
// 7.5 exporter), so a proof computed over it cannot be replayed on
// another connection. c must be a connection of this package.
func ExportKey(c net.Conn, label string) ([]byte, error) {
	var cs tls.ConnectionState
	switch conn := c.(type) {
	case *tls.Conn:
		cs = conn.ConnectionState()
	case *trackedConn:
		cs = conn.Conn.(*tls.Conn).ConnectionState()
	default:
		return nil, fmt.Errorf("export key: %T is not a TLS connection", c)
	}
	return cs.ExportKeyingMaterial(label, nil, 32)
}

// RaftLayer returns a Raft stream layer for one group: its Accept yields
// the group's incoming streams and its Dial opens streams to the same
// group on other nodes. Closing it stops routing the group's streams here.
func (t *Transport) RaftLayer(shard uint32) (*RaftLayer, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if old := t.layers[shard]; old != nil && !old.isClosed() {
		return nil, fmt.Errorf("raft layer for shard %d already open", shard)
	}
	l := &RaftLayer{t: t, shard: shard}
	var addr net.Addr = t.ln.Addr()
	if t.cfg.Advertise != "" {
		addr = advertised(t.cfg.Advertise)
	}
	l.chanListener = newChanListener(addr, func() {
		t.mu.Lock()
		if t.layers[shard] == l.chanListener {
			delete(t.layers, shard)
		}
		t.mu.Unlock()
	})
	t.layers[shard] = l.chanListener
	close(t.layerAdded)
	t.layerAdded = make(chan struct{})
	return l, nil
}

// Block cuts this node off from the given peers: live connections to and
// from them are closed, and new ones refused until Unblock.
func (t *Transport) Block(nodeIDs ...string) {
	t.mu.Lock()
	for _, id := range nodeIDs {
		t.blocked[id] = true
	}
	victims := t.victimsLocked()
	t.mu.Unlock()
	closeAll(victims)
}

// Unblock lifts Block for the given peers.
func (t *Transport) Unblock(nodeIDs ...string) {
	t.mu.Lock()
	for _, id := range nodeIDs {
		delete(t.blocked, id)
	}
	t.mu.Unlock()
}

// Isolate cuts this node off from every peer (a network partition), or
// lifts that.
func (t *Transport) Isolate(on bool) {
	t.mu.Lock()
	t.isolate = on
	victims := t.victimsLocked()
	t.mu.Unlock()
	closeAll(victims)
}

// Silence makes the cluster port go quiet without closing or refusing
// anything (on), as a network that drops packets without a reset, or a
// stalled VM, does to a node: live streams stay open but nothing more is
// read from or written to them, dials wait until their deadline, and
// streams accepted meanwhile get no handshake. Peers see no error, only
// silence, and every wait ends at its deadline or when the stream is
// closed. Silence(false) lets everything through again. A fault for
// tests.
func (t *Transport) Silence(on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case on && !t.silent.Load():
		t.voiced = make(chan struct{})
		t.silent.Store(true)
	case !on && t.silent.Load():
		t.silent.Store(false)
		close(t.voiced)
	}
}

// waitVoice returns once the port is not silenced, or with an error when
// deadline passes (a zero deadline: none) or closed is closed first.
func (t *Transport) waitVoice(deadline time.Time, closed <-chan struct{}) error {
	if !t.silent.Load() {
		return nil // the path of every read and write
	}
	t.mu.Lock()
	silent, voiced := t.silent.Load(), t.voiced
	t.mu.Unlock()
	if !silent {
		return nil
	}
	var expire <-chan time.Time
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		timer := time.NewTimer(d)
		defer timer.Stop()
		expire = timer.C
	}
	select {
	case <-voiced:
		return nil
	case <-expire:
		return os.ErrDeadlineExceeded
	case <-closed:
		return net.ErrClosed
	}
}

func (t *Transport) waitVoiceCtx(ctx context.Context) error {
	dl, _ := ctx.Deadline()
	if err := t.waitVoice(dl, ctx.Done()); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return nil
}

// Disconnect closes every live connection with a peer that may no longer
// talk (a removed node), without blocking it for good.
func (t *Transport) Disconnect(nodeID string) {
	t.mu.Lock()
	var victims []*trackedConn
	for c := range t.conns {
		if c.peer == nodeID {
			victims = append(victims, c)
		}
	}
	t.mu.Unlock()
	closeAll(victims)
}

func (t *Transport) victimsLocked() []*trackedConn {
	var out []*trackedConn
	for c := range t.conns {
		if c.peer != "" && (t.isolate || t.blocked[c.peer]) {
			out = append(out, c)
		}
	}
	return out
}

func closeAll(conns []*trackedConn) {
	for _, c := range conns {
		c.Close()
	}
}

// Close stops the cluster port: the listener, every stream layer and
// every live connection.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.layerAdded)
	if t.silent.Load() {
		t.silent.Store(false)
		close(t.voiced)
	}
	layers := make([]*chanListener, 0, len(t.layers))
	for _, l := range t.layers {
		layers = append(layers, l)
	}
	conns := make([]*trackedConn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	err := t.ln.Close()
	t.rpc.Close()
	t.join.Close()
	for _, l := range layers {
		l.Close()
	}
	closeAll(conns)
	t.wg.Wait()
	return err
}

// trackedConn is a live stream, remembered so that faults can close it
// or hold its traffic (Silence).
type trackedConn struct {
	net.Conn // the stream's TLS layer
	// batch is the socket under it, which gathers a write's records
	batch  *recordBatcher
	t      *Transport
	peer   string
	once   sync.Once
	closed chan struct{}
	// The deadlines set on the stream (unix ns, 0 for none), which a
	// read or write held by Silence keeps.
	readDL, writeDL atomic.Int64
}

func (t *Transport) track(c *tls.Conn, batch *recordBatcher, peer string) (*trackedConn, error) {
	tc := &trackedConn{Conn: c, batch: batch, t: t, peer: peer, closed: make(chan struct{})}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	t.conns[tc] = struct{}{}
	return tc, nil
}

// Read reads from the stream, once the port is not silenced.
func (c *trackedConn) Read(p []byte) (int, error) {
	if err := c.t.waitVoice(unixTime(c.readDL.Load()), c.closed); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// Write writes to the stream, once the port is not silenced.
func (c *trackedConn) Write(p []byte) (int, error) {
	if err := c.t.waitVoice(unixTime(c.writeDL.Load()), c.closed); err != nil {
		return 0, err
	}
	return c.batch.writeThrough(c.Conn, p)
}

// SetDeadline sets both deadlines of the stream.
func (c *trackedConn) SetDeadline(t time.Time) error {
	c.readDL.Store(unixNano(t))
	c.writeDL.Store(unixNano(t))
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline sets the stream's read deadline.
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	c.readDL.Store(unixNano(t))
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the stream's write deadline.
func (c *trackedConn) SetWriteDeadline(t time.Time) error {
	c.writeDL.Store(unixNano(t))
	return c.Conn.SetWriteDeadline(t)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Close closes the stream and forgets it.
func (c *trackedConn) Close() error {
	var err error
	c.once.Do(func() {
		close(c.closed)
		err = c.Conn.Close()
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return err
}

// Peer returns the node id of a stream's peer ("" for a join stream).
func Peer(c net.Conn) string {
	if tc, ok := c.(*trackedConn); ok {
		return tc.peer
	}
	return ""
}

// chanListener is a net.Listener fed by the accept loop.
type chanListener struct {
	addr    net.Addr
	ch      chan net.Conn
	done    chan struct{}
	once    sync.Once
	onClose func()
}

func newChanListener(addr net.Addr, onClose func()) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn, 16), done: make(chan struct{}), onClose: onClose}
}

func (l *chanListener) deliver(c net.Conn) bool {
	timer := time.NewTimer(dispatchTimeout)
	defer timer.Stop()
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	case <-timer.C:
		return false
	}
}

func (l *chanListener) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// Accept returns the next stream.
func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops the listener; streams queued and not accepted are closed.
func (l *chanListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		if l.onClose != nil {
			l.onClose()
		}
		for {
			select {
			case c := <-l.ch:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

// Addr returns the cluster port's address.
func (l *chanListener) Addr() net.Addr { return l.addr }

// advertised is an address as other nodes dial it.
type advertised string

func (a advertised) Network() string { return "tcp" }
func (a advertised) String() string  { return string(a) }

// RaftLayer carries one Raft group's streams over the cluster port. It
// satisfies raftstore.StreamLayer.
type RaftLayer struct {
	*chanListener
	t     *Transport
	shard uint32
}

// raftRedial is how often a Raft dial to an unreachable peer is tried
// again within its timeout.
const raftRedial = 200 * time.Millisecond

// Dial opens a stream to the same group on the node at addr. While the
// peer cannot be reached it keeps trying until timeout: hashicorp/raft
// backs a failing follower off exponentially (up to 40 s) per failed
// attempt, so a dial that fails at once would leave a restarted node
// waiting long for its log; a dial that waits counts as one failure and
// connects as soon as the node is back.
func (l *RaftLayer) Dial(addr string, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	for {
		if l.isClosed() {
			return nil, ErrClosed
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		c, err := l.t.Dial(ctx, addr, KindRaft, l.shard)
		cancel()
		if err == nil || errors.Is(err, ErrClosed) || time.Until(deadline) < raftRedial {
			return c, err
		}
		select {
		case <-l.done:
			return nil, ErrClosed
		case <-time.After(raftRedial):
		}
	}
}
