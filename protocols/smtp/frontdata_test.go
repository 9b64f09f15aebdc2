package smtp

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols/protocoltest"
)

// TestDataAsChunks sends DATA transfers to the MX port as a client does,
// pipelining the next command after the end of data: one of several
// chunks with dot-stuffed lines, which must be stored byte for byte; one
// over the size limit and one with a line over the limit, which must be
// refused only after their end, with the client still in step.
func TestDataAsChunks(t *testing.T) {
	const limit = 3 * convertChunk
	f := newFixture(t)
	cfg := f.config(ModeMX)
	cfg.MaxMessageBytes = limit
	addr, _ := f.start(cfg, false)

	// The content as stored, and as sent (dot-stuffed).
	var content, wire strings.Builder
	content.WriteString("From: <" + remote + ">\r\nSubject: chunked-data\r\n\r\n")
	for i := 0; content.Len() < 2*convertChunk+1000; i++ {
		var line string
		switch i % 5 {
		case 0:
			line = "." // a line of one dot
		case 1:
			line = ".. two dots " + strconv.Itoa(i)
		case 2:
			line = ".\tdot and tab"
		default:
			line = strings.Repeat("body text ", 1+i%90)
		}
		content.WriteString(line + "\r\n")
	}
	for _, line := range strings.SplitAfter(content.String(), "\r\n") {
		if strings.HasPrefix(line, ".") {
			wire.WriteString(".")
		}
		wire.WriteString(line)
	}

	r := dialRaw(t, addr, nil)
	r.mustCmd(250, "EHLO client.example")
	r.mustCmd(250, "MAIL FROM:<%s>", remote)
	r.mustCmd(250, "RCPT TO:<%s>", alice)
	r.mustCmd(354, "DATA")
	r.send(wire.String() + ".\r\nNOOP\r\n")
	r.expect(250)
	r.expect(250) // the pipelined NOOP

	// Over the limit, in several chunks: refused after the end of data.
	r.mustCmd(250, "MAIL FROM:<%s>", remote)
	r.mustCmd(250, "RCPT TO:<%s>", alice)
	r.mustCmd(354, "DATA")
	big := sizedMessage(t, limit+convertChunk, "too-big")
	r.send(big + ".\r\nNOOP\r\n")
	if reply := r.expect(552); !strings.HasPrefix(reply, "5.3.4 ") {
		t.Errorf("over the limit: %q, want 552 5.3.4", reply)
	}
	r.expect(250)

	// A line over the limit.
	r.mustCmd(250, "MAIL FROM:<%s>", remote)
	r.mustCmd(250, "RCPT TO:<%s>", alice)
	r.mustCmd(354, "DATA")
	r.send("From: <" + remote + ">\r\nSubject: long-line\r\n\r\n" + strings.Repeat("x", DefaultMaxLineLength) + "\r\n.\r\nNOOP\r\n")
	if reply := r.expect(500); !strings.HasPrefix(reply, "5.5.2 ") {
		t.Errorf("line too long: %q, want 500 5.5.2", reply)
	}
	r.expect(250)

	// DATA without recipients gets what go-smtp says to DATA.
	r.mustCmd(250, "MAIL FROM:<%s>", remote)
	if _, reply := r.cmd("DATA"); !strings.Contains(reply, "Missing RCPT TO") {
		t.Errorf("DATA without RCPT: %q", reply)
	}
	r.mustCmd(250, "RSET")

	// A client's own BDAT has no line limit (go-smtp counts none there),
	// as before DATA went the same way.
	r.mustCmd(250, "MAIL FROM:<%s>", remote)
	r.mustCmd(250, "RCPT TO:<%s>", alice)
	long := "From: <" + remote + ">\r\nSubject: bdat-long-line\r\n\r\n" + strings.Repeat("x", DefaultMaxLineLength) + "\r\n"
	r.send("BDAT " + itoa(len(long)) + " LAST\r\n" + long)
	r.expect(250)
	r.mustCmd(221, "QUIT")

	msgs := f.inbox(alice, alicePW)
	if len(msgs) != 2 {
		t.Fatalf("INBOX holds %d messages, want 2", len(msgs))
	}
	stored := findMessage(t, msgs, "chunked-data")
	if !strings.HasSuffix(stored, content.String()) {
		t.Errorf("stored message (%d bytes) does not end with the content sent (%d bytes)", len(stored), content.Len())
	}
	findMessage(t, msgs, "bdat-long-line")
}

// unstuffReference reads DATA content as RFC 5321 defines it: lines end
// at CRLF, a line of "." ends the content and a leading "." is taken out.
// It returns the message, the bytes after the end, and whether the end
// was found.
func unstuffReference(in []byte) (msg, rest []byte, ok bool) {
	msg = []byte{}
	for {
		i := bytes.Index(in, []byte("\r\n"))
		if i < 0 {
			return msg, nil, false
		}
		line := in[:i]
		in = in[i+2:]
		if string(line) == "." {
			return msg, in, true
		}
		line = bytes.TrimPrefix(line, []byte("."))
		msg = append(msg, line...)
		msg = append(msg, '\r', '\n')
	}
}

// FuzzDataAsChunks sends "DATA" and content through the MX front and
// reads what it hands go-smtp the way go-smtp does, answering each chunk
// as go-smtp would: the chunks must carry the content as RFC 5321 reads
// it, each chunk's command line must come alone in its read (go-smtp
// counts line lengths in what it reads for a command), the client must
// get 354 and the reply to the last chunk only, and the bytes after the
// end of data must be handed on as commands, unchanged.
func FuzzDataAsChunks(f *testing.F) {
	f.Add([]byte("..\r\n.x\r\n\n.\n.\r\r\n.\rz\r\n.\r\nQUIT\r\n"), uint8(7), uint8(3))
	f.Add([]byte("a\r\r\n.\r\nNOOP\r\n"), uint8(1), uint8(1))
	f.Add([]byte(strings.Repeat("line\r\n..dot\r\n", 40)+".\r\n"), uint8(60), uint8(200))
	f.Add([]byte(".\r\n"), uint8(2), uint8(0))
	f.Add([]byte("no end\r\n"), uint8(9), uint8(5))
	f.Fuzz(func(t *testing.T, content []byte, step, chunk uint8) {
		if bytes.Contains(bytes.ToUpper(content), []byte("DATA")) {
			return // a second DATA would be converted again
		}
		srv := &Server{cfg: Config{MaxLineLength: DefaultMaxLineLength}}
		fc := &fuzzConn{r: bytes.NewReader(append([]byte("DATA\r\n"), content...))}
		front := srv.newFrontConn(fc)
		front.chunkMax = int(chunk)%40 + 1
		reads := &readRecorder{r: front, size: int(step)%64 + 1}
		br := bufio.NewReaderSize(reads, 16)

		line, err := br.ReadString('\n')
		if err != nil || line != "BDAT 0\r\n" {
			t.Fatalf("DATA handed on as %q, %v", line, err)
		}
		answer(t, front, "250 2.0.0 Continue\r\n")
		if got := fc.out.String(); got != dataReady {
			t.Fatalf("client got %q, want 354", got)
		}
		fc.out.Reset()
		want, rest, complete := unstuffReference(content)
		var got []byte
		for {
			reads.header = true
			line, err := br.ReadString('\n')
			if err != nil {
				if complete {
					t.Fatalf("read of a chunk command: %v (content complete)", err)
				}
				// What was handed on is a start of the content that
				// an end line would have made of it.
				ended, _, _ := unstuffReference(append(bytes.Clone(content), "\r\n.\r\n"...))
				if !bytes.HasPrefix(ended, got) {
					t.Fatalf("content so far %q is not a start of %q", got, ended)
				}
				return
			}
			reads.header = false
			if reads.mixed {
				t.Fatalf("a read held the command %q and content", line)
			}
			fields := strings.Fields(line)
			if len(fields) < 2 || fields[0] != "BDAT" {
				t.Fatalf("chunk command %q", line)
			}
			n, err := strconv.Atoi(fields[1])
			if err != nil || n > front.chunkMax+1 {
				t.Fatalf("chunk size in %q: %v (chunks up to %d)", line, err, front.chunkMax)
			}
			buf := make([]byte, n)
			if _, err := io.ReadFull(br, buf); err != nil {
				t.Fatalf("chunk of %d bytes: %v", n, err)
			}
			got = append(got, buf...)
			if len(fields) == 3 && fields[2] == "LAST" {
				answer(t, front, "250 2.0.0 OK: queued\r\n")
				break
			}
			answer(t, front, "250 2.0.0 Continue\r\n")
			if fc.out.Len() != 0 {
				t.Fatalf("client got %q for a chunk that is not the last", fc.out.String())
			}
		}
		if !complete {
			t.Fatalf("LAST chunk sent for content without an end line %q", content)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("chunks carried\n%q\nwant\n%q", got, want)
		}
		if fc.out.String() != "250 2.0.0 OK: queued\r\n" {
			t.Fatalf("client got %q for the last chunk", fc.out.String())
		}
		after, _ := io.ReadAll(br)
		if !bytes.Equal(after, rest) {
			t.Fatalf("after the end of data: handed %q, want %q", after, rest)
		}
	})
}

// answer writes go-smtp's reply to the front.
func answer(t *testing.T, front *frontConn, reply string) {
	t.Helper()
	if _, err := front.Write([]byte(reply)); err != nil {
		t.Fatal(err)
	}
}

// readRecorder reads from r in reads of at most size bytes and notes
// whether a read made while header is set (go-smtp reading a command
// line) returned more than one line.
type readRecorder struct {
	r      io.Reader
	size   int
	header bool
	mixed  bool
}

func (rr *readRecorder) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p[:min(len(p), rr.size)])
	if rr.header {
		if i := bytes.IndexByte(p[:n], '\n'); i >= 0 && i < n-1 {
			rr.mixed = true
		}
	}
	return n, err
}

// TestDataSlowClient sends DATA content in pieces, each pause shorter
// than the read timeout but all of them together longer: the message is
// accepted, as it was when go-smtp read DATA itself (the timeout is
// between reads, not per chunk the front collects).
func TestDataSlowClient(t *testing.T) {
	const idle = time.Second
	f := newFixture(t)
	cfg := f.config(ModeMX)
	cfg.ReadTimeout = idle
	addr, _ := f.start(cfg, false)

	r := dialRaw(t, addr, nil)
	r.mustCmd(250, "EHLO client.example")
	r.mustCmd(250, "MAIL FROM:<%s>", remote)
	r.mustCmd(250, "RCPT TO:<%s>", alice)
	r.mustCmd(354, "DATA")
	r.send("From: <" + remote + ">\r\nSubject: slow-client\r\n\r\n")
	for i := range 6 {
		time.Sleep(idle * 3 / 10) // the client's pace, not a wait for the server
		r.send("piece " + strconv.Itoa(i) + "\r\n")
	}
	r.send(".\r\n")
	r.expect(250)
	findMessage(t, f.inbox(alice, alicePW), "slow-client")
}

// A client that goes away right after DATA, or at the start of its own
// BDAT transfer (or resets it at once), ends the session without a
// panic, on the MX port (the front) and on submission (go-smtp's own
// reading, after AUTH). go-smtp starts the session's Data on a goroutine
// that asks the connection for its session, and the read error ended the
// connection (clearing the session) before that goroutine ran: a nil
// dereference, recovered by go-smtp and logged with its stack, at least
// once in each run of 300 such sessions on the development machine. A
// read error is now handed on once Data has begun.
func TestClientGoneAtTransferStart(t *testing.T) {
	f := newFixture(t)
	logs := &logBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mx := f.config(ModeMX)
	mx.Logger = logger
	mxAddr, _ := f.start(mx, false)
	sub := f.config(ModeSubmission)
	sub.Logger, sub.AllowInsecureAuth = logger, true
	subAddr, _ := f.start(sub, false)
	auth := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+alice+"\x00"+alicePW)) + "\r\n"
	cases := []struct{ addr, script string }{
		{mxAddr, "MAIL FROM:<" + remote + ">\r\nRCPT TO:<" + alice + ">\r\nDATA\r\n"},
		{mxAddr, "MAIL FROM:<" + remote + ">\r\nRCPT TO:<" + alice + ">\r\nBDAT 0\r\n"},
		{mxAddr, "MAIL FROM:<" + remote + ">\r\nRCPT TO:<" + alice + ">\r\nBDAT 100\r\nSubject: cut"},
		{subAddr, auth + "MAIL FROM:<" + alice + ">\r\nRCPT TO:<" + bob + ">\r\nBDAT 0\r\n"},
		{subAddr, auth + "MAIL FROM:<" + alice + ">\r\nRCPT TO:<" + bob + ">\r\nBDAT 100\r\nSubject: cut"},
		// An RSET after the BDAT resets the transaction while go-smtp's
		// goroutine may not have started.
		{mxAddr, "MAIL FROM:<" + remote + ">\r\nRCPT TO:<" + alice + ">\r\nBDAT 0\r\nRSET\r\n"},
		{subAddr, auth + "MAIL FROM:<" + alice + ">\r\nRCPT TO:<" + bob + ">\r\nBDAT 0\r\nRSET\r\n"},
	}
	for _, c := range cases {
		for range 60 {
			// Script fails the test if the session outlives the client.
			protocoltest.Script(t, c.addr, []byte("EHLO client.example\r\n"+c.script))
		}
	}
	// Every session has ended, each after its Data began.
	if strings.Contains(logs.String(), "panic") {
		t.Fatalf("a panic was logged:\n%s", logs)
	}
	if len(f.inbox(alice, alicePW)) != 0 || len(f.inbox(bob, bobPW)) != 0 {
		t.Fatalf("a cut message was stored")
	}
}
