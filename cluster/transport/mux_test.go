package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// pki is a cluster CA and a way to issue node identities under it.
type pki struct {
	ca *CA
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	ca, _, err := NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	return &pki{ca: ca}
}

func (p *pki) identity(t testing.TB, nodeID string) *Identity {
	t.Helper()
	key, keyPEM, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := p.ca.Issue(nodeID, key.Public(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := LoadIdentity(p.ca.CertPEM(), certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func listen(t *testing.T, id *Identity, allow func(string) bool) *Transport {
	t.Helper()
	tr, err := Listen(Config{Listen: "127.0.0.1:0", Identity: id, Allow: allow})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// echo accepts one stream on l and echoes a line back.
func echo(l net.Listener) <-chan error {
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil {
			_, err = io.WriteString(c, "echo "+line)
		}
		done <- err
	}()
	return done
}

func roundTrip(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return line
}

func TestRaftGroupsShareOnePort(t *testing.T) {
	p := newPKI(t)
	a, b := listen(t, p.identity(t, "a"), nil), listen(t, p.identity(t, "b"), nil)
	layer1, err := b.RaftLayer(1)
	if err != nil {
		t.Fatal(err)
	}
	layer2, err := b.RaftLayer(2)
	if err != nil {
		t.Fatal(err)
	}
	from, err := a.RaftLayer(2)
	if err != nil {
		t.Fatal(err)
	}
	done := echo(layer2)
	c, err := from.Dial(b.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := roundTrip(t, c); got != "echo hello\n" {
		t.Fatalf("got %q", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if Peer(c) != "b" {
		t.Fatalf("peer of the dialed stream: %q", Peer(c))
	}
	// Group 1 got nothing: the header routes the stream.
	select {
	case c := <-layer1.ch:
		t.Fatalf("group 1 received a stream of group 2 from %s", c.RemoteAddr())
	default:
	}
	// A group without a layer on the peer is refused.
	if _, err := a.RaftLayer(3); err != nil {
		t.Fatal(err)
	}
	c3, err := a.Dial(ctx(t), b.Addr().String(), KindRaft, 3)
	if err != nil {
		t.Fatal(err)
	}
	c3.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := c3.Read(make([]byte, 1)); err == nil {
		t.Fatal("a stream for a group the peer does not keep stayed open")
	}
}

func TestForeignCertificateIsRefused(t *testing.T) {
	ours, theirs := newPKI(t), newPKI(t)
	node := listen(t, ours.identity(t, "a"), nil)
	intruder := listen(t, theirs.identity(t, "x"), nil)
	rpc := echo(node.RPCListener())

	// The intruder's certificate is not from our CA: the node drops it.
	c, err := intruder.Dial(ctx(t), node.Addr().String(), KindRPC, 0)
	if err == nil {
		// The intruder does not trust our CA either, so its own check
		// fails first; if it got through, the node must close it.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "hello\n")
		if _, rerr := c.Read(make([]byte, 1)); rerr == nil {
			t.Fatal("the node answered a peer with a foreign certificate")
		}
		c.Close()
	} else if !strings.Contains(err.Error(), "not issued by the cluster CA") {
		t.Fatalf("dial error %v, want a CA mismatch", err)
	}
	// A stream without any client certificate asks for the RPC service.
	raw, err := tls.Dial("tcp", node.Addr().String(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	if err := writeHeader(ctx(t), raw, KindRPC, 0); err != nil {
		t.Fatal(err)
	}
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); err == nil {
		t.Fatal("an anonymous RPC stream stayed open")
	}
	raw.Close()
	select {
	case err := <-rpc:
		t.Fatalf("the RPC service accepted a stream from a foreign or anonymous peer: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	// Our own node gets through.
	friend := listen(t, ours.identity(t, "b"), nil)
	fc, err := friend.Dial(ctx(t), node.Addr().String(), KindRPC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	if got := roundTrip(t, fc); got != "echo hello\n" {
		t.Fatalf("got %q", got)
	}
}

func TestAStreamWithoutCertificateReachesOnlyJoin(t *testing.T) {
	p := newPKI(t)
	node := listen(t, p.identity(t, "a"), nil)
	done := echo(node.JoinListener())
	c, err := DialJoin(ctx(t), node.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := roundTrip(t, c); got != "echo hello\n" {
		t.Fatalf("got %q", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Both ends derive the same session-bound key; another session
	// derives another.
	k1, err := ExportKey(c, "label")
	if err != nil || len(k1) != 32 {
		t.Fatalf("export key: %v", err)
	}
	c2, err := DialJoin(ctx(t), node.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if k2, _ := ExportKey(c2, "label"); string(k1) == string(k2) {
		t.Fatal("two sessions exported the same key")
	}
}

func TestBlockCutsAndRefusesAPeer(t *testing.T) {
	p := newPKI(t)
	a, b := listen(t, p.identity(t, "a"), nil), listen(t, p.identity(t, "b"), nil)
	la, _ := a.RaftLayer(1)
	lb, _ := b.RaftLayer(1)
	done := echo(lb)
	c, err := la.Dial(b.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	<-done

	b.Block("a")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a live stream from a blocked peer stayed open")
	}
	if _, err := la.Dial(b.Addr().String(), 2*time.Second); err == nil {
		// The dial itself may complete before b refuses; the stream must
		// then be closed.
		select {
		case c := <-lb.ch:
			t.Fatalf("b accepted a stream from blocked a: %v", c.RemoteAddr())
		case <-time.After(200 * time.Millisecond):
		}
	}
	b.Unblock("a")
	done = echo(lb)
	c2, err := la.Dial(b.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	roundTrip(t, c2)

	// Isolation cuts everyone, both ways, until lifted.
	a.Isolate(true)
	if _, err := la.Dial(b.Addr().String(), 2*time.Second); !errors.Is(err, ErrBlocked) {
		t.Fatalf("dial from an isolated node: %v", err)
	}
	a.Isolate(false)
	if <-done != nil {
		t.Fatal("echo failed")
	}
}

func TestRemovedNodeIsRefused(t *testing.T) {
	p := newPKI(t)
	removed := map[string]bool{"x": true}
	node := listen(t, p.identity(t, "a"), func(id string) bool { return !removed[id] })
	x := listen(t, p.identity(t, "x"), nil)
	rpc := echo(node.RPCListener())
	c, err := x.Dial(ctx(t), node.Addr().String(), KindRPC, 0)
	if err == nil {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "hello\n")
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a removed node was answered")
		}
	}
	select {
	case <-rpc:
		t.Fatal("the RPC service accepted a removed node")
	case <-time.After(200 * time.Millisecond):
	}
}

// TestSilenceHoldsTrafficWithoutClosing: a silenced node's live stream
// stays open but carries nothing, a read held by the silence ends at its
// deadline with a timeout and not an error of its own, a dial to or from
// the node gets no handshake until its deadline, and once the silence is
// lifted the same stream carries what was written meanwhile.
func TestSilenceHoldsTrafficWithoutClosing(t *testing.T) {
	p := newPKI(t)
	a, b := listen(t, p.identity(t, "a"), nil), listen(t, p.identity(t, "b"), nil)
	la, _ := a.RaftLayer(1)
	lb, _ := b.RaftLayer(1)
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := lb.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	c, err := la.Dial(b.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var s net.Conn
	select {
	case s = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("b accepted no stream")
	}
	defer s.Close()

	b.Silence(true)
	if _, err := io.WriteString(c, "held\n"); err != nil {
		t.Fatalf("a's write to silenced b: %v", err) // the bytes wait in b's socket
	}
	s.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := s.Read(make([]byte, 16)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on silenced b: %d bytes, %v; want a timeout", n, err)
	}
	s.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := s.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write from silenced b: %v; want a timeout", err)
	}
	start := time.Now()
	if _, err := la.Dial(b.Addr().String(), 500*time.Millisecond); err == nil {
		t.Fatal("a dial to silenced b completed")
	} else if errors.Is(err, ErrBlocked) || time.Since(start) < 400*time.Millisecond {
		t.Fatalf("a dial to silenced b failed at once (%v after %v); it should wait for its deadline", err, time.Since(start))
	}
	if _, err := lb.Dial(a.Addr().String(), 300*time.Millisecond); err == nil {
		t.Fatal("silenced b dialled a")
	}

	b.Silence(false)
	s.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(s).ReadString('\n')
	if err != nil || line != "held\n" {
		t.Fatalf("after the silence b read %q, %v; want what a wrote meanwhile", line, err)
	}
	c2, err := la.Dial(b.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial after the silence: %v", err)
	}
	c2.Close()
}

// A dial after Close says the transport is closed in both vocabularies:
// Raft's log adapter knows only net.ErrClosed, and must tell this node's
// stop from a peer that does not answer.
func TestDialAfterCloseIsNetErrClosed(t *testing.T) {
	p := newPKI(t)
	a, b := listen(t, p.identity(t, "a"), nil), listen(t, p.identity(t, "b"), nil)
	layer, err := a.RaftLayer(1)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	_, err = layer.Dial(b.Addr().String(), time.Second)
	if !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("dial after close: %v", err)
	}
	if err.Error() != "transport: closed" {
		t.Fatalf("message %q", err)
	}
	if errors.Is(errors.New("dial tcp: connection refused"), ErrClosed) {
		t.Fatal("any error is ErrClosed")
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAStreamWaitsForItsGroupToOpen: a leader replicates to a new
// replica before the replica opens on its node; the stream is held until
// the group's layer opens, and served then.
func TestAStreamWaitsForItsGroupToOpen(t *testing.T) {
	p := newPKI(t)
	a, b := listen(t, p.identity(t, "a"), nil), listen(t, p.identity(t, "b"), nil)
	b.layerWait = time.Minute
	c, err := a.Dial(ctx(t), b.Addr().String(), KindRaft, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "the stream to wait for group 4", func() bool { return b.waiting.Load() == 1 })
	layer, err := b.RaftLayer(4)
	if err != nil {
		t.Fatal(err)
	}
	done := echo(layer)
	if got := roundTrip(t, c); got != "echo hello\n" {
		t.Fatalf("got %q", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := b.waiting.Load(); n != 0 {
		t.Fatalf("%d streams still waiting", n)
	}
}

// TestCloseReleasesAWaitingStream: a stream waiting for a group's layer
// does not hold the transport's Close.
func TestCloseReleasesAWaitingStream(t *testing.T) {
	p := newPKI(t)
	a, b := listen(t, p.identity(t, "a"), nil), listen(t, p.identity(t, "b"), nil)
	b.layerWait = time.Hour
	c, err := a.Dial(ctx(t), b.Addr().String(), KindRaft, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "the stream to wait for group 5", func() bool { return b.waiting.Load() == 1 })
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close waited for a stream held for a group's layer")
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the held stream stayed open after Close")
	}
}
