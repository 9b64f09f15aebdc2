package transport

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the socket writes made on it, and fails every
// write once failAfter writes have been made (0: never).
type countingConn struct {
	net.Conn
	writes    atomic.Int64
	failAfter int64
}

var errSocketGone = errors.New("socket gone")

func (c *countingConn) Write(p []byte) (int, error) {
	n := c.writes.Add(1)
	if c.failAfter > 0 && n > c.failAfter {
		return 0, errSocketGone
	}
	return c.Conn.Write(p)
}

// tlsPair returns a TLS client whose socket is counted and batched, and
// the server's end of the stream.
func tlsPair(t testing.TB, failAfter int64) (*tls.Conn, *recordBatcher, *countingConn, *tls.Conn) {
	t.Helper()
	id := newPKI(t).identity(t, "n1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srvRaw, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	counted := &countingConn{Conn: raw, failAfter: failAfter}
	batch := newRecordBatcher(counted)
	client := tls.Client(batch, &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true})
	server := tls.Server(srvRaw, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{id.Cert}})
	t.Cleanup(func() { client.Close(); server.Close() })
	deadline := time.Now().Add(10 * time.Second)
	client.SetDeadline(deadline)
	server.SetDeadline(deadline)
	hs := make(chan error, 1)
	go func() { hs <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake (its records must not wait in a batch): %v", err)
	}
	if err := <-hs; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return client, batch, counted, server
}

func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7) + seed
	}
	return p
}

// readAll reads n bytes from the server's end in the background.
func readAll(server *tls.Conn, n int) <-chan []byte {
	out := make(chan []byte, 1)
	go func() {
		got := make([]byte, n)
		if _, err := io.ReadFull(server, got); err != nil {
			out <- nil
			return
		}
		out <- got
	}()
	return out
}

func TestLargeWriteGoesOutInFewSocketWrites(t *testing.T) {
	client, batch, counted, server := tlsPair(t, 0)
	const size = 1 << 20
	// Past TLS's first small records, so both writes below are cut
	// into full 16 KiB records.
	warm := pattern(256<<10, 9)
	got := readAll(server, len(warm))
	if _, err := client.Write(warm); err != nil {
		t.Fatal(err)
	}
	<-got

	direct := pattern(size, 1)
	got = readAll(server, size)
	before := counted.writes.Load()
	if _, err := client.Write(direct); err != nil {
		t.Fatal(err)
	}
	directWrites := counted.writes.Load() - before
	if g := <-got; !bytes.Equal(g, direct) {
		t.Fatal("the server read other bytes than were written")
	}

	batched := pattern(size, 2)
	got = readAll(server, size)
	before = counted.writes.Load()
	n, err := batch.writeThrough(client, batched)
	if err != nil || n != size {
		t.Fatalf("writeThrough = %d, %v", n, err)
	}
	batchedWrites := counted.writes.Load() - before
	if g := <-got; !bytes.Equal(g, batched) {
		t.Fatal("the server read other bytes than were written through the batch")
	}
	t.Logf("1 MiB: %d socket writes record by record, %d batched", directWrites, batchedWrites)
	if directWrites < 60 {
		t.Fatalf("a 1 MiB write made only %d socket writes without batching; the test no longer tells the two apart", directWrites)
	}
	if limit := int64(size/maxBatch + 2); batchedWrites > limit {
		t.Fatalf("a 1 MiB write made %d socket writes, want at most %d", batchedWrites, limit)
	}
}

func TestSmallWritesGoOutAtOnce(t *testing.T) {
	client, batch, counted, server := tlsPair(t, 0)
	msg := pattern(100, 3)
	got := readAll(server, len(msg))
	before := counted.writes.Load()
	if _, err := batch.writeThrough(client, msg); err != nil {
		t.Fatal(err)
	}
	if w := counted.writes.Load() - before; w != 1 {
		t.Fatalf("a 100-byte write made %d socket writes, want 1", w)
	}
	if g := <-got; !bytes.Equal(g, msg) {
		t.Fatal("the server read other bytes than were written")
	}
}

func TestFailedSocketWriteFailsTheStream(t *testing.T) {
	client, batch, counted, _ := tlsPair(t, 0)
	counted.failAfter = counted.writes.Load() + 1 // the next batch goes, the one after fails
	if _, err := batch.writeThrough(client, pattern(100<<10, 4)); err != nil {
		t.Fatalf("first write: %v", err)
	}
	n, err := batch.writeThrough(client, pattern(100<<10, 5))
	if !errors.Is(err, errSocketGone) || n != 0 {
		t.Fatalf("write over a failing socket = %d, %v; want 0, %v", n, err, errSocketGone)
	}
	writes := counted.writes.Load()
	if _, err := batch.writeThrough(client, pattern(100<<10, 6)); err == nil {
		t.Fatal("a write after a failed one succeeded: its records would follow lost ones")
	}
	if _, err := batch.Write([]byte("alert")); !errors.Is(err, errSocketGone) {
		t.Fatalf("a record written outside a batch after the failure: %v", err)
	}
	if w := counted.writes.Load(); w != writes {
		t.Fatalf("%d socket writes after the failure", w-writes)
	}
}

func TestConcurrentWritesStayWhole(t *testing.T) {
	client, batch, _, server := tlsPair(t, 0)
	const writers, each = 4, 8
	sizes := []int{100, 20 << 10, 300 << 10, 70 << 10}
	total := 0
	for _, n := range sizes {
		total += each * (8 + n)
	}
	got := readAll(server, total)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				body := pattern(sizes[w], byte(w*each+i))
				frame := binary.BigEndian.AppendUint32(nil, uint32(w))
				frame = binary.BigEndian.AppendUint32(frame, uint32(len(body)))
				frame = append(frame, body...)
				if _, err := batch.writeThrough(client, frame); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	stream := <-got
	if stream == nil {
		t.Fatal("the server did not read every frame")
	}
	next := make([]int, writers)
	for len(stream) > 0 {
		w, n := int(binary.BigEndian.Uint32(stream)), int(binary.BigEndian.Uint32(stream[4:]))
		if w >= writers || n != sizes[w] || len(stream) < 8+n {
			t.Fatalf("frame header (writer %d, %d bytes): writes were interleaved", w, n)
		}
		if !bytes.Equal(stream[8:8+n], pattern(n, byte(w*each+next[w]))) {
			t.Fatalf("writer %d's frame %d arrived changed", w, next[w])
		}
		next[w]++
		stream = stream[8+n:]
	}
}

// BenchmarkLargeWrites writes through TLS over loopback, record by
// record and batched, and reads everything back on the other side: the
// CPU both ends spend on a Raft append's bytes.
func BenchmarkLargeWrites(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20} {
		for _, batched := range []bool{false, true} {
			name := fmt.Sprintf("%dKiB/records", size>>10)
			if batched {
				name = fmt.Sprintf("%dKiB/batched", size>>10)
			}
			b.Run(name, func(b *testing.B) {
				client, batch, _, server := tlsPair(b, 0)
				client.SetDeadline(time.Time{})
				server.SetDeadline(time.Time{})
				msg := pattern(size, 7)
				done := make(chan error, 1)
				go func() {
					buf := make([]byte, size)
					for range b.N {
						if _, err := io.ReadFull(server, buf); err != nil {
							done <- err
							return
						}
					}
					done <- nil
				}()
				b.SetBytes(int64(size))
				b.ResetTimer()
				for range b.N {
					var err error
					if batched {
						_, err = batch.writeThrough(client, msg)
					} else {
						_, err = client.Write(msg)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}
