package imap

import (
	"bufio"
	"bytes"
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
	rc.zbuf = new(bytes.Buffer)
	zw, err := flate.NewWriter(rc.zbuf, flate.BestSpeed)
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
		if err := rc.writeCompressed([]byte("b1 SEARCH SUBJECT ")); err != nil {
			return
		}
		for n < limit {
			select {
			case <-stop:
				return
			default:
			}
			if err := rc.writeCompressed(chunk); err != nil {
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
// a partial flush (zlib's Z_PARTIAL_FLUSH: the block ends, then an empty
// fixed-code block whose last bits zlib keeps until the next burst), as
// mbsync's does, gets each burst's commands answered at once: the
// inflater must hand on a block's bytes when it ends and must not read
// past the bits it needs. The bytes are zlib's (level 6, raw deflate)
// for one stream of two bursts: "p1 NOOP" (a fixed-code block), then
// what mbsync sends when it uploads a message: STORE, CHECK and an APPEND
// with LITERAL+ in one burst (a dynamic-code block).
func TestCompressPartialFlush(t *testing.T) {
	ts := newTestServer(t)
	ts.deliver(t, simpleMessage("a@example.net", testUser, "one", "Mon, 2 Jan 2006 15:04:05 +0000", "hi"))
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("SELECT INBOX")
	rc.send("z1 COMPRESS DEFLATE\r\n")
	if st := rc.expectTagged("z1"); !strings.HasPrefix(st, "OK") {
		t.Fatalf("COMPRESS DEFLATE: %q", st)
	}
	rc.r = bufio.NewReader(flate.NewReader(rc.conn))
	if err := rc.conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	bursts := []struct {
		hex  string
		tags []string
	}{
		{"2a3054f0f3f70fe0e50208", []string{"p1"}},
		{"40d618ec240c4451743fc9fcc30b2b0d69b5688c292111cb541aa110a712176cdae159d032d3b4af81c6f8377e832b76fd31c735bb9b937bee2d07f01a4d40268b17011ef4c3d9f849ba329a8938818b7558a4798e1b584b447d69eb37104c45f06cd32d8c974b114fa017c58f8bb71e7c79775eff9bb3b0327b1fcc4163f5800374096be22c31e74c36d9072af24192519fd094854937f62d6b619fd5ad569ccda3b9705658d53ba37df0dc6bce02a3093539495ba20f8447ba2a8b74a787a0b66955238d1a7a77ee39e36c6ad436c7c28e5ab9fbe97ebb93fbcfff04", []string{"p2", "p3", "p4"}},
	}
	for _, burst := range bursts {
		b, err := hex.DecodeString(burst.hex)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rc.conn.Write(b); err != nil {
			t.Fatal(err)
		}
		for _, tag := range burst.tags {
			if st := rc.expectTagged(tag); !strings.HasPrefix(st, "OK") {
				t.Fatalf("%s after a partial flush: %q", tag, st)
			}
		}
	}
}

// TestNoStartTLSUnderCompress: a plaintext session (insecure auth
// allowed) that logged in, compressed and unauthenticated is not offered
// STARTTLS and is refused it (RFC 4978 section 4: TLS first); its LOGOUT
// is answered, compressed.
func TestNoStartTLSUnderCompress(t *testing.T) {
	ts := newTestServer(t)
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.deflate()
	rc.mustOK("UNAUTHENTICATE")
	caps := rc.mustOK("CAPABILITY")
	if len(caps) != 1 || strings.Contains(caps[0], "STARTTLS") {
		t.Errorf("capabilities under COMPRESS: %q", caps)
	}
	if _, st := rc.cmd("STARTTLS"); !strings.HasPrefix(st, "BAD") {
		t.Fatalf("STARTTLS under COMPRESS: %q", st)
	}
	rc.mustOK("NOOP")
	// The front's LOGOUT answer goes through the deflater too.
	if untagged, st := rc.cmd("LOGOUT"); !strings.HasPrefix(st, "OK") || len(untagged) != 1 || !strings.HasPrefix(untagged[0], "* BYE") {
		t.Fatalf("LOGOUT under COMPRESS: %q %q", untagged, st)
	}
}
