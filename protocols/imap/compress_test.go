package imap

import (
	"bufio"
	"compress/flate"
	"encoding/hex"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// flushCounter counts the compressed bytes a client reads and the sync
// flushes among them (each ends in the empty stored block 00 00 FF FF).
type flushCounter struct {
	r io.Reader

	mu      sync.Mutex
	bytes   int64
	flushes int
	last    []byte
}

func (c *flushCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bytes += int64(n)
	buf := append(c.last, p[:n]...)
	for i := 0; i+4 <= len(buf); i++ {
		if buf[i] == 0 && buf[i+1] == 0 && buf[i+2] == 0xff && buf[i+3] == 0xff {
			c.flushes++
		}
	}
	c.last = append([]byte(nil), buf[max(0, len(buf)-3):]...)
	return n, err
}

func (c *flushCounter) count() (int64, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes, c.flushes
}

// deflate turns on COMPRESS DEFLATE on rc and returns the counter of
// what it reads from now on.
func (rc *rawConn) deflate() *flushCounter {
	rc.t.Helper()
	rc.send("z1 COMPRESS DEFLATE\r\n")
	if st := rc.expectTagged("z1"); !strings.HasPrefix(st, "OK") {
		rc.t.Fatalf("COMPRESS DEFLATE: %q", st)
	}
	if n := rc.r.Buffered(); n != 0 {
		rc.t.Fatalf("%d bytes after COMPRESS's OK before compression", n)
	}
	zw, err := flate.NewWriter(rc.conn, flate.BestSpeed)
	if err != nil {
		rc.t.Fatal(err)
	}
	rc.zw = zw
	fc := &flushCounter{r: rc.conn}
	rc.r = bufio.NewReader(flate.NewReader(fc))
	return fc
}

// TestCompressDeflate: a client that speaks deflate logs in, turns
// COMPRESS on, selects, fetches a large message, idles, and logs out;
// COMPRESS is advertised only after login and until it is on, and a
// second COMPRESS or an unknown mechanism is refused. SORT, which the
// front runs, works over it after IDLE. The server's
// output is flushed per burst, not per byte.
func TestCompressDeflate(t *testing.T) {
	ts := newTestServer(t)
	var body strings.Builder
	for i := 0; body.Len() < 200<<10; i++ {
		body.WriteString("line of a large message, the same words again and again\r\n")
	}
	ts.deliver(t, simpleMessage("a@example.net", testUser, "big one", "Mon, 2 Jan 2006 15:04:05 +0000", body.String()+"END-OF-BODY"))

	rc := dialRaw(t, ts.addr)
	if caps := rc.mustOK("CAPABILITY"); strings.Contains(strings.Join(caps, " "), "COMPRESS") {
		t.Errorf("COMPRESS offered before login: %q", caps)
	}
	if _, st := rc.cmd("COMPRESS DEFLATE"); !strings.HasPrefix(st, "BAD") {
		t.Errorf("COMPRESS before login: %q", st)
	}
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	if caps := rc.mustOK("CAPABILITY"); !strings.Contains(strings.Join(caps, " "), " COMPRESS=DEFLATE") {
		t.Errorf("COMPRESS=DEFLATE not offered after login: %q", caps)
	}
	if _, st := rc.cmd("COMPRESS LZMA"); !strings.HasPrefix(st, "BAD") {
		t.Errorf("COMPRESS LZMA: %q", st)
	}
	fc := rc.deflate()

	if caps := rc.mustOK("CAPABILITY"); strings.Contains(strings.Join(caps, " "), "COMPRESS") {
		t.Errorf("COMPRESS still offered once on: %q", caps)
	}
	if _, st := rc.cmd("COMPRESS DEFLATE"); !strings.HasPrefix(st, "NO [COMPRESSIONACTIVE]") {
		t.Errorf("second COMPRESS: %q", st)
	}
	if untagged := rc.mustOK("SELECT INBOX"); !strings.Contains(strings.Join(untagged, "\n"), "* 1 EXISTS") {
		t.Errorf("SELECT: %q", untagged)
	}
	beforeBytes, beforeFlushes := fc.count()
	untagged := rc.mustOK("FETCH 1 BODY[]")
	afterBytes, afterFlushes := fc.count()
	if len(untagged) != 1 || !strings.Contains(untagged[0], "END-OF-BODY") || !strings.Contains(untagged[0], "line of a large message") {
		t.Fatalf("FETCH over deflate: %d lines", len(untagged))
	}
	wire, flushes := afterBytes-beforeBytes, afterFlushes-beforeFlushes
	t.Logf("FETCH of %d bytes: %d compressed bytes, %d flushes", body.Len(), wire, flushes)
	if wire >= int64(body.Len()/4) {
		t.Errorf("FETCH of %d bytes took %d bytes compressed", body.Len(), wire)
	}
	if flushes < 1 || flushes > body.Len()/1024 {
		t.Errorf("FETCH of %d bytes was flushed %d times", body.Len(), flushes)
	}

	rc.send("i1 IDLE\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	ts.deliver(t, simpleMessage("b@example.net", testUser, "during idle", "Mon, 2 Jan 2006 15:04:05 +0000", "hi"))
	for {
		l := rc.line()
		if l == "* 2 EXISTS" {
			break
		}
	}
	rc.send("DONE\r\n")
	if st := rc.expectTagged("i1"); !strings.HasPrefix(st, "OK") {
		t.Fatalf("IDLE: %q", st)
	}
	// The front's own SORT, after IDLE, over the compressed stream.
	if untagged := rc.mustOK("SORT (REVERSE ARRIVAL) UTF-8 ALL"); len(untagged) != 1 || untagged[0] != "* SORT 2 1" {
		t.Errorf("SORT after IDLE: %q", untagged)
	}
	untagged, st := rc.cmd("LOGOUT")
	if !strings.HasPrefix(st, "OK") || len(untagged) == 0 || !strings.HasPrefix(untagged[0], "* BYE") {
		t.Errorf("LOGOUT: %q %q", untagged, st)
	}
}

// TestCompressBomb: a deflate stream of one endless command line (each
// kilobyte on the wire inflates to about a megabyte) meets the front's
// line bound on the inflated bytes: the connection ends with BAD and BYE,
// having read only a bounded part of it, and the server's memory stays
// bounded.
func TestCompressBomb(t *testing.T) {
	ts := newTestServer(t)
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.deflate()

	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	const limit = 1 << 30 // a gigabyte of one line, if nothing stopped it
	stop := make(chan struct{})
	sent := make(chan int64, 1)
	go func() {
		chunk := []byte(strings.Repeat("x", 64<<10))
		var n int64
		defer func() { sent <- n }()
		rc.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := rc.zw.Write([]byte("b1 SEARCH SUBJECT ")); err != nil {
			return
		}
		for n < limit {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := rc.zw.Write(chunk); err != nil {
				return
			}
			if err := rc.zw.Flush(); err != nil {
				return
			}
			n += int64(len(chunk))
		}
	}()
	var lines []string
	for {
		rc.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		l, err := rc.r.ReadString('\n')
		if err != nil {
			break
		}
		lines = append(lines, strings.TrimRight(l, "\r\n"))
	}
	close(stop)
	n := <-sent
	all := strings.Join(lines, "\n")
	if !strings.Contains(all, "b1 BAD") || !strings.Contains(all, "* BYE") {
		t.Errorf("bomb answered %q", lines)
	}
	if n >= limit {
		t.Errorf("the server read all %d bytes of the line", n)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("sent %d inflated bytes; heap %d -> %d", n, before.HeapAlloc, after.HeapAlloc)
	if grown := int64(after.TotalAlloc) - int64(before.TotalAlloc); grown > 128<<20 {
		t.Errorf("the server allocated %d bytes for a bomb", grown)
	}
}

// TestCompressPartialFlush: a client whose deflater ends each burst with
// a partial flush (zlib's Z_PARTIAL_FLUSH: the block ends, followed by an
// empty fixed-code block, no byte alignment), as mbsync's does, gets each
// command answered at once; the inflater must not wait for a sync flush
// or more input. The bytes are zlib's (level 6, raw deflate) for
// "p1 NOOP\r\n" and "p2 NOOP\r\n", each partial-flushed.
func TestCompressPartialFlush(t *testing.T) {
	ts := newTestServer(t)
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.send("z1 COMPRESS DEFLATE\r\n")
	if st := rc.expectTagged("z1"); !strings.HasPrefix(st, "OK") {
		t.Fatalf("COMPRESS DEFLATE: %q", st)
	}
	rc.r = bufio.NewReader(flate.NewReader(rc.conn))
	if err := rc.conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, burst := range []struct{ tag, hex string }{{"p1", "2a3054f0f3f70fe0e50208"}, {"p2", "a00223280320"}} {
		b, err := hex.DecodeString(burst.hex)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rc.conn.Write(b); err != nil {
			t.Fatal(err)
		}
		if st := rc.expectTagged(burst.tag); !strings.HasPrefix(st, "OK") {
			t.Fatalf("%s NOOP after a partial flush: %q", burst.tag, st)
		}
	}
}
