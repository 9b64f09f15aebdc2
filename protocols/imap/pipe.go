package imap

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// pipeBuffer bounds the bytes one direction of a front's pipe holds for
// its reader; a writer beyond it waits, so a slow client still holds the
// library back (as the client's connection would) without unbounded
// memory.
const pipeBuffer = 64 << 10

// pipeKeep is the largest buffer a drained direction keeps for the next
// write; a larger one (after a big response) is dropped, so that the
// many idle connections of a busy server hold little memory.
const pipeKeep = 4 << 10

// pipeBufs holds buffers of pipeBuffer bytes, the most a direction
// holds. A direction whose unread bytes outgrow pipeKeep takes one and
// gives it back once drained: a large response (a page of headers, a
// message body) passes through one buffer instead of growing a fresh one
// by doubling and dropping it at each drain, which cost a 1 MiB FETCH
// about its own size in allocations.
var pipeBufs = sync.Pool{New: func() any { return new([pipeBuffer]byte) }}

// newPipe returns the two ends of an in-memory connection between a
// front and its library session. Unlike net.Pipe, each direction buffers
// (up to pipeBuffer): the library flushes after every response line, and
// with a synchronous pipe each of those lines was a hand-off that waited
// for the relay's goroutine to run; buffered, a FETCH of twenty messages
// is written in one go and relayed in a few reads. Bytes written before
// a Close are still read by the other end, then io.EOF, as over TCP.
func newPipe() (net.Conn, net.Conn) {
	ab, ba := newPipeDir(), newPipeDir()
	end := func(in, out *pipeDir, local, remote string) *pipeEnd {
		return &pipeEnd{in: in, out: out, rdl: newPipeDeadline(), wdl: newPipeDeadline(),
			local: pipeAddr(local), remote: pipeAddr(remote), closed: make(chan struct{})}
	}
	return end(ba, ab, "front", "session"), end(ab, ba, "session", "front")
}

// pipeDir is one direction of a pipe: what was written and not read yet.
type pipeDir struct {
	mu      sync.Mutex
	buf     []byte
	off     int  // read offset into buf
	wclosed bool // the writing end closed: EOF once buf is read
	rclosed bool // the reading end closed: writes fail
	// readable and writable hold a token when data arrived or space was
	// freed; done is closed when either end closes.
	readable, writable chan struct{}
	done               chan struct{}
	doneOnce           sync.Once
}

func newPipeDir() *pipeDir {
	return &pipeDir{readable: make(chan struct{}, 1), writable: make(chan struct{}, 1), done: make(chan struct{})}
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (d *pipeDir) closeSide(writer bool) {
	d.mu.Lock()
	if writer {
		d.wclosed = true
	} else {
		d.rclosed = true
		d.buf, d.off = nil, 0
	}
	d.mu.Unlock()
	d.doneOnce.Do(func() { close(d.done) })
}

// pipeEnd is one end of a pipe; it reads from in and writes to out.
type pipeEnd struct {
	in, out       *pipeDir
	rdl, wdl      *pipeDeadline
	local, remote net.Addr

	closeOnce sync.Once
	closed    chan struct{} // closed by Close
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Read reads what the other end wrote, waiting for it.
func (p *pipeEnd) Read(b []byte) (int, error) {
	d := p.in
	for {
		if isClosed(p.closed) {
			return 0, io.ErrClosedPipe
		}
		if isClosed(p.rdl.wait()) {
			return 0, os.ErrDeadlineExceeded
		}
		d.mu.Lock()
		if n := len(d.buf) - d.off; n > 0 {
			n = copy(b, d.buf[d.off:])
			d.off += n
			if d.off == len(d.buf) {
				// Drained: an idle connection keeps no large buffer.
				switch c := cap(d.buf); {
				case c == pipeBuffer:
					pipeBufs.Put((*[pipeBuffer]byte)(d.buf[:pipeBuffer]))
					d.buf = nil
				case c > pipeKeep:
					d.buf = nil
				default:
					d.buf = d.buf[:0]
				}
				d.off = 0
			}
			d.mu.Unlock()
			poke(d.writable)
			return n, nil
		}
		eof := d.wclosed
		d.mu.Unlock()
		if eof {
			return 0, io.EOF
		}
		if len(b) == 0 {
			return 0, nil
		}
		select {
		case <-d.readable:
		case <-d.done:
		case <-p.closed:
		case <-p.rdl.wait():
		}
	}
}

// Write queues b for the other end, waiting while the direction is full.
func (p *pipeEnd) Write(b []byte) (int, error) {
	d := p.out
	n := 0
	for {
		if isClosed(p.closed) {
			return n, io.ErrClosedPipe
		}
		if isClosed(p.wdl.wait()) {
			return n, os.ErrDeadlineExceeded
		}
		if len(b) == 0 {
			return n, nil
		}
		d.mu.Lock()
		if d.rclosed || d.wclosed {
			d.mu.Unlock()
			return n, io.ErrClosedPipe
		}
		if room := pipeBuffer - (len(d.buf) - d.off); room > 0 {
			take := min(room, len(b))
			if len(d.buf)+take > cap(d.buf) {
				switch unread := len(d.buf) - d.off; {
				case unread+take > pipeKeep && cap(d.buf) < pipeBuffer:
					// room bounds unread+take by pipeBuffer: a pooled
					// buffer holds them, and grows no more.
					d.buf = append(pipeBufs.Get().(*[pipeBuffer]byte)[:0], d.buf[d.off:]...)
					d.off = 0
				case cap(d.buf) == 0:
					// What a drained direction may keep, at once, rather
					// than grown by doubling as lines come.
					d.buf = make([]byte, 0, pipeKeep)
				case d.off > 0:
					// Move the unread bytes to the front before growing.
					d.buf = d.buf[:copy(d.buf, d.buf[d.off:])]
					d.off = 0
				}
			}
			d.buf = append(d.buf, b[:take]...)
			d.mu.Unlock()
			poke(d.readable)
			n += take
			b = b[take:]
			if len(b) == 0 {
				return n, nil
			}
			continue
		}
		d.mu.Unlock()
		select {
		case <-d.writable:
		case <-d.done:
		case <-p.closed:
		case <-p.wdl.wait():
		}
	}
}

// Close ends this end: the other end reads what was written, then EOF,
// and its writes fail.
func (p *pipeEnd) Close() error {
	p.closeOnce.Do(func() {
		close(p.closed)
		p.out.closeSide(true)
		p.in.closeSide(false)
	})
	return nil
}

func (p *pipeEnd) LocalAddr() net.Addr  { return p.local }
func (p *pipeEnd) RemoteAddr() net.Addr { return p.remote }

func (p *pipeEnd) SetDeadline(t time.Time) error {
	p.rdl.set(t)
	p.wdl.set(t)
	return nil
}

func (p *pipeEnd) SetReadDeadline(t time.Time) error  { p.rdl.set(t); return nil }
func (p *pipeEnd) SetWriteDeadline(t time.Time) error { p.wdl.set(t); return nil }

// pipeDeadline is a deadline whose passing closes a channel, so that
// blocked reads and writes can select on it.
type pipeDeadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline passes
}

func newPipeDeadline() *pipeDeadline { return &pipeDeadline{cancel: make(chan struct{})} }

// set moves the deadline; the zero time means none.
func (d *pipeDeadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer's function ran (or is about to): wait for the close
	}
	d.timer = nil
	if isClosed(d.cancel) {
		d.cancel = make(chan struct{})
	}
	if t.IsZero() {
		return
	}
	if dur := time.Until(t); dur > 0 {
		ch := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	close(d.cancel)
}

// wait returns a channel closed once the deadline has passed.
func (d *pipeDeadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}
