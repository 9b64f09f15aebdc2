package imap

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

// TestPipeConn runs x/net's net.Conn conformance checks (reads, writes,
// deadlines, closing, concurrent use) on the front's pipe.
func TestPipeConn(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		c1, c2 = newPipe()
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	})
}

// TestPipeDeliversBeforeEOF: what was written before a Close is read,
// then io.EOF; the closed end's peer can no longer write.
func TestPipeDeliversBeforeEOF(t *testing.T) {
	a, b := newPipe()
	if _, err := a.Write([]byte("* BYE done\r\nA1 OK LOGOUT completed\r\n")); err != nil {
		t.Fatal(err)
	}
	a.Close()
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatalf("read after the writer closed: %v", err)
	}
	if string(got) != "* BYE done\r\nA1 OK LOGOUT completed\r\n" {
		t.Fatalf("read %q", got)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("write to a closed peer: %v, want io.ErrClosedPipe", err)
	}
}

// TestPipeHoldsBackAFullWriter: a writer ahead of its reader by more than
// pipeBuffer waits (its write deadline ends the wait), and goes on once
// the reader takes bytes.
func TestPipeHoldsBackAFullWriter(t *testing.T) {
	a, b := newPipe()
	defer a.Close()
	defer b.Close()
	big := bytes.Repeat([]byte("x"), pipeBuffer+1000)
	a.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := a.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n != pipeBuffer {
		t.Fatalf("write beyond the buffer: %d bytes, %v; want %d and a deadline error", n, err, pipeBuffer)
	}
	a.SetWriteDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := a.Write(big[n:])
		done <- err
	}()
	got := make([]byte, len(big))
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the held-back write: %v", err)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("bytes differ")
	}
}

// TestPipeCountsUnreadBytes: the bound is on bytes not yet read: a
// writer that keeps three quarters of the buffer ahead of its reader,
// one piece written for each piece read, never waits.
func TestPipeCountsUnreadBytes(t *testing.T) {
	a, b := newPipe()
	defer a.Close()
	defer b.Close()
	piece := bytes.Repeat([]byte("y"), pipeBuffer/4)
	got := make([]byte, len(piece)/3+1)
	a.SetWriteDeadline(time.Now().Add(5 * time.Second))
	for range 3 {
		if _, err := a.Write(piece); err != nil {
			t.Fatal(err)
		}
	}
	// A buffer that grew past pipeBuffer (append rounds capacity up)
	// and was partly read: the room is what is unread, not its length.
	c, d := newPipe()
	defer c.Close()
	defer d.Close()
	c.SetWriteDeadline(time.Now().Add(time.Second))
	for _, n := range []int{52 << 10, 12 << 10} {
		if _, err := c.Write(bytes.Repeat([]byte("w"), n)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := io.ReadFull(d, make([]byte, 16<<10)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(bytes.Repeat([]byte("w"), 8<<10)); err != nil {
		t.Fatalf("8 KiB with 48 KiB unread: %v", err)
	}
	for i := range 200 {
		// Read a piece in odd parts, so the reader never empties the
		// buffer at a piece's end.
		for left := len(piece); left > 0; {
			n, err := b.Read(got[:min(len(got), left)])
			if err != nil {
				t.Fatal(err)
			}
			left -= n
		}
		if _, err := a.Write(piece); err != nil {
			t.Fatalf("write %d with three pieces unread: %v", i, err)
		}
	}
}

// TestPipeDropsLargeBufferWhenDrained: once a big response is read, the
// direction keeps no large buffer (idle connections hold little memory).
func TestPipeDropsLargeBufferWhenDrained(t *testing.T) {
	a, b := newPipe()
	defer a.Close()
	defer b.Close()
	big := bytes.Repeat([]byte("z"), 32<<10)
	if _, err := a.Write(big); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(b, make([]byte, len(big))); err != nil {
		t.Fatal(err)
	}
	checkDrainedBuffer(t, a)
	if _, err := a.Write(nil); err != nil {
		t.Fatalf("empty write: %v", err)
	}
}

// TestPipeLargeResponsesAllocateNothing: responses larger than an idle
// direction keeps, written in lines as the library writes them and read
// by a smaller reader as the relay reads, pass through a pooled buffer:
// after the first, they allocate (close to) nothing.
func TestPipeLargeResponsesAllocateNothing(t *testing.T) {
	a, b := newPipe()
	defer a.Close()
	defer b.Close()
	line := bytes.Repeat([]byte("x"), 98)
	line = append(line, '\r', '\n')
	const lines = 400 // 40 KB a response
	rbuf := make([]byte, 32<<10)
	respond := func() {
		done := make(chan error, 1)
		go func() {
			for range lines {
				if _, err := a.Write(line); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		for got := 0; got < lines*len(line); {
			n, err := b.Read(rbuf)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	respond()
	// The goroutine and its channel are a few allocations each time;
	// growing a buffer of the response's size took 19 in all.
	n := testing.AllocsPerRun(50, respond)
	t.Logf("a 40 KB response: %.1f allocations", n)
	if n > 8 {
		t.Errorf("a 40 KB response allocated %.1f times", n)
	}
	checkDrainedBuffer(t, a)
}

// checkDrainedBuffer fails the test when the direction a writes to keeps
// a buffer larger than pipeKeep once drained.
func checkDrainedBuffer(t *testing.T, a net.Conn) {
	t.Helper()
	d := a.(*pipeEnd).out
	d.mu.Lock()
	kept := cap(d.buf)
	d.mu.Unlock()
	if kept > pipeKeep {
		t.Fatalf("a drained direction keeps %d bytes, want at most %d", kept, pipeKeep)
	}
}
