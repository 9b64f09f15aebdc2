package transport

import (
	"io"
	"net"
	"sync"
)

// A write to a stream of the cluster port is cut by TLS into records of
// at most 16 KiB, and crypto/tls hands each record to the socket in a
// write of its own: a Raft append carrying a 1 MiB message was 64
// socket writes, each of which, on loopback and on a fast network alike,
// pushes a segment and wakes the reading side. recordBatcher sits
// between a stream's TLS layer and its socket and, while one write of
// the stream is under way (writeThrough), gathers the records that write
// makes and sends them in socket writes of up to maxBatch bytes.
// Handshakes, alerts and anything else TLS writes outside such a write
// go to the socket at once, as before.
const (
	// maxBatch bounds the bytes gathered before they go to the socket:
	// a few dozen records, so a large append is a few socket writes,
	// without holding a copy of a whole large write.
	maxBatch = 256 << 10
	// batchFrom is the smallest write worth gathering: a write of one
	// record's plaintext or less is one socket write anyway.
	batchFrom = 16 << 10
)

// batchBuffers holds the gathering buffers of writes under way, so an
// idle stream keeps none. Write sends a buffer on before it would pass
// maxBatch, so that is all one holds.
var batchBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, maxBatch)
	return &b
}}

// recordBatcher is a stream's socket, seen from its TLS layer.
type recordBatcher struct {
	net.Conn

	// wmu makes writeThrough's hold, write and release one step, so
	// that a write is reported done only once its records went to the
	// socket, never while they wait in another writer's batch (the TLS
	// layer takes its writers one at a time anyway).
	wmu sync.Mutex

	mu      sync.Mutex
	holding bool
	buf     *[]byte // while holding
	// err is the first failed socket write. Records gathered for it
	// are lost, so every later write fails with it too, as the TLS
	// layer itself does after a failed write.
	err error
}

// newRecordBatcher returns raw's batcher.
func newRecordBatcher(raw net.Conn) *recordBatcher {
	return &recordBatcher{Conn: raw}
}

// writeThrough writes p through tlsConn, the TLS layer on top of b, so
// that its records reach the socket in few writes. It reports the
// bytes of p written, and fails when any of the socket writes failed.
func (b *recordBatcher) writeThrough(tlsConn io.Writer, p []byte) (int, error) {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	if len(p) <= batchFrom {
		return tlsConn.Write(p)
	}
	b.hold()
	n, err := tlsConn.Write(p)
	if ferr := b.release(); ferr != nil && err == nil {
		return 0, ferr
	}
	return n, err
}

// hold starts gathering what the TLS layer writes.
func (b *recordBatcher) hold() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holding = true
	b.buf = batchBuffers.Get().(*[]byte)
}

// release sends what was gathered and stops gathering.
func (b *recordBatcher) release() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	err := b.flushLocked()
	b.holding = false
	*b.buf = (*b.buf)[:0]
	batchBuffers.Put(b.buf)
	b.buf = nil
	return err
}

// Write is the TLS layer's write of one or more records.
func (b *recordBatcher) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if !b.holding {
		return b.writeLocked(p)
	}
	if len(*b.buf)+len(p) > maxBatch {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= maxBatch {
			return b.writeLocked(p)
		}
	}
	*b.buf = append(*b.buf, p...)
	return len(p), nil
}

// flushLocked sends the gathered bytes.
func (b *recordBatcher) flushLocked() error {
	if b.err != nil {
		return b.err
	}
	if len(*b.buf) == 0 {
		return nil
	}
	_, err := b.writeLocked(*b.buf)
	*b.buf = (*b.buf)[:0]
	return err
}

// writeLocked writes p to the socket, keeping a failure.
func (b *recordBatcher) writeLocked(p []byte) (int, error) {
	n, err := b.Conn.Write(p)
	if err != nil {
		b.err = err
	}
	return n, err
}
