package smtp

import (
	"bytes"
	"io"
	"net"
	netsmtp "net/smtp"
	"strings"
	"testing"
	"time"
)

// TestMXBarePostmaster: "RCPT TO:<postmaster>" without a domain is
// accepted on the MX port and delivered to Config.Postmaster (RFC 5321
// section 4.5.1), in plain text and after STARTTLS, pipelined, over DATA
// and BDAT; message content that looks like that command is stored
// byte for byte, and commands pipelined after STARTTLS are discarded.
func TestMXBarePostmaster(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(ModeMX)
	cfg.Postmaster = func() string { return alice }
	addr, _ := f.start(cfg, false)

	// Content with lines that are commands to anyone who reads it as
	// such, a dot-stuffed line and the size of a BDAT chunk.
	const content = "RCPT TO:<postmaster>\r\nrcpt to:<Postmaster> NOTIFY=NEVER\r\nSTARTTLS\r\nBDAT 5 LAST\r\nDATA\r\n"

	t.Run("net/smtp over STARTTLS", func(t *testing.T) {
		c, err := netsmtp.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Hello("client.example"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := c.Extension("STARTTLS"); !ok {
			t.Fatal("STARTTLS not offered")
		}
		if err := c.StartTLS(f.clientTLS); err != nil {
			t.Fatalf("STARTTLS: %v", err)
		}
		if ok, _ := c.Extension("REQUIRETLS"); !ok {
			t.Error("REQUIRETLS not offered after STARTTLS")
		}
		if ok, _ := c.Extension("STARTTLS"); ok {
			t.Error("STARTTLS offered again under TLS")
		}
		if err := c.Mail(remote); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("PostMaster"); err != nil {
			t.Fatalf("RCPT TO:<PostMaster>: %v", err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		// net/smtp dot-stuffs the line that starts with a dot.
		if _, err := io.WriteString(w, "Subject: pm-data\r\n\r\n"+content+".leading dot\r\n"); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("end of DATA: %v", err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
		msg := findMessage(t, f.inbox(alice, alicePW), "pm-data")
		if !strings.HasSuffix(msg, "\r\n\r\n"+content+".leading dot\r\n") {
			t.Errorf("content changed:\n%q", msg)
		}
		if !strings.Contains(fieldValue(msg, "Received"), "TLS") {
			t.Errorf("Received field does not record the TLS: %q", fieldValue(msg, "Received"))
		}
	})

	t.Run("pipelined BDAT after STARTTLS", func(t *testing.T) {
		r := dialRaw(t, addr, nil)
		if msg := r.mustCmd(250, "EHLO client.example"); !strings.Contains(msg, "STARTTLS") || strings.Contains(msg, "REQUIRETLS") {
			t.Errorf("EHLO before TLS: %q", msg)
		}
		// RFC 3207 section 4.2: what follows STARTTLS in the same write
		// is not a command after the handshake.
		r.send("STARTTLS\r\nMAIL FROM:<" + remote + ">\r\n")
		r.expect(220)
		r.startTLS(f.clientTLS)
		// RFC 3207 section 4.2: EHLO comes first under TLS.
		r.mustCmd(503, "MAIL FROM:<%s>", remote)
		if msg := r.mustCmd(250, "EHLO client.example"); strings.Contains(msg, "STARTTLS") || !strings.Contains(msg, "REQUIRETLS") {
			t.Errorf("EHLO under TLS: %q", msg)
		}
		r.mustCmd(502, "RCPT TO:<%s>", bob)
		body := "Subject: pm-bdat\r\n\r\n" + content + ".\r\n"
		r.send("MAIL FROM:<" + remote + "> REQUIRETLS\r\nrcpt to: <POSTMASTER>\r\nRCPT TO:<" + bob + ">\r\n" +
			"BDAT " + itoa(len(body)) + " LAST\r\n" + body + "NOOP\r\n")
		for range 5 {
			r.expect(250)
		}
		r.mustCmd(221, "QUIT")
		for _, u := range []struct{ user, pw string }{{alice, alicePW}, {bob, bobPW}} {
			msg := findMessage(t, f.inbox(u.user, u.pw), "pm-bdat")
			if !strings.HasSuffix(msg, "\r\n\r\n"+content+".\r\n") {
				t.Errorf("content for %s changed:\n%q", u.user, msg)
			}
		}
	})

	t.Run("pipelined commands after the end of DATA", func(t *testing.T) {
		r := dialRaw(t, addr, nil)
		r.mustCmd(250, "EHLO client.example")
		r.send("MAIL FROM:<" + remote + ">\r\nRCPT TO:<postmaster> \r\nDATA\r\n")
		r.expect(250)
		r.expect(250)
		r.expect(354)
		r.send("Subject: pm-pipe-1\r\n\r\n" + content + ".\r\n" +
			"MAIL FROM:<" + remote + ">\r\nRCPT TO:<postmaster>\r\nDATA\r\n")
		r.expect(250)
		r.expect(250)
		r.expect(250)
		r.expect(354)
		r.send("Subject: pm-pipe-2\r\n\r\nbody\r\n.\r\nQUIT\r\n")
		r.expect(250)
		r.expect(221)
		msgs := f.inbox(alice, alicePW)
		if msg := findMessage(t, msgs, "pm-pipe-1"); !strings.HasSuffix(msg, "\r\n\r\n"+content) {
			t.Errorf("content changed:\n%q", msg)
		}
		findMessage(t, msgs, "pm-pipe-2")
	})

	t.Run("a refused DATA starts no content", func(t *testing.T) {
		r := dialRaw(t, addr, nil)
		r.mustCmd(250, "EHLO client.example")
		r.send("MAIL FROM:<" + remote + ">\r\nRCPT TO:<nobody@example.test>\r\nDATA\r\n")
		r.expect(250)
		r.expect(550)
		if code, _ := r.reply(); code < 500 {
			t.Fatalf("DATA without recipients: %d", code)
		}
		r.send("MAIL FROM:<" + remote + ">\r\nRCPT TO:<postmaster>\r\nQUIT\r\n")
		r.expect(250)
		r.expect(250)
		r.expect(221)
	})

	t.Run("only the bare name", func(t *testing.T) {
		r := dialRaw(t, addr, nil)
		r.mustCmd(250, "EHLO client.example")
		r.mustCmd(250, "MAIL FROM:<%s>", remote)
		r.mustCmd(501, "RCPT TO:<postmasterx>")
		r.mustCmd(550, "RCPT TO:<postmaster@elsewhere.example>")
		r.mustCmd(501, "RCPT TO:postmaster")
	})

	t.Run("no postmaster configured", func(t *testing.T) {
		addr, _ := f.start(f.config(ModeMX), false)
		r := dialRaw(t, addr, nil)
		r.mustCmd(250, "EHLO client.example")
		r.mustCmd(250, "MAIL FROM:<%s>", remote)
		r.mustCmd(501, "RCPT TO:<postmaster>")
	})
}

// fuzzConn is a connection whose client bytes come from a reader and
// whose replies are collected, for the fuzz target.
type fuzzConn struct {
	net.Conn
	r   io.Reader
	out bytes.Buffer
}

func (c *fuzzConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *fuzzConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *fuzzConn) Close() error                     { return nil }
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzFrontConn feeds client bytes through the MX front as go-smtp reads
// them (answering 354 to every DATA line it is handed). Apart from
// rewritten bare postmaster RCPT lines, what comes out is what went in,
// byte for byte; and nothing without "postmaster" in it is changed.
func FuzzFrontConn(f *testing.F) {
	f.Add([]byte("EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<postmaster>\r\nDATA\r\nRCPT TO:<postmaster>\r\n.\r\nQUIT\r\n"), uint8(7))
	f.Add([]byte("BDAT 22 LAST\r\nRCPT TO:<postmaster>\r\nrcpt to: <PostMaster> X=Y\r\n"), uint8(1))
	f.Add([]byte("DATA\r\n..\r\n\n.\n.\r\r\n.\r\nBDAT x\r\nBDAT 3 last\r\nabcRCPT TO:<postmaster>"), uint8(200))
	f.Add([]byte(strings.Repeat("x", 5000)+"\nRCPT TO:<postmaster>\n"), uint8(3))
	const target = "pm@primary.test"
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		srv := &Server{cfg: Config{MaxLineLength: DefaultMaxLineLength, Postmaster: func() string { return target }}}
		fc := &fuzzConn{r: bytes.NewReader(in)}
		front := srv.newFrontConn(fc)
		front.convert = false // DATA as DATA; FuzzDataAsChunks covers the other way
		var out []byte
		buf := make([]byte, int(step)%64+1)
		for range 10*len(in) + 100 {
			n, err := front.Read(buf)
			if n > len(buf) {
				t.Fatalf("Read returned %d of %d", n, len(buf))
			}
			chunk := buf[:n]
			out = append(out, chunk...)
			if front.mode == frontCommand && len(front.pending) == 0 && strings.EqualFold(strings.TrimRight(string(chunk), "\r\n"), "DATA") {
				if _, err := front.Write([]byte("354 go ahead\r\n")); err != nil {
					t.Fatal(err)
				}
			}
			if err != nil {
				break
			}
		}
		if !bytes.Contains(bytes.ToLower(in), []byte("postmaster")) {
			if !bytes.Equal(out, in) {
				t.Fatalf("bytes changed:\nin  %q\nout %q", in, out)
			}
			return
		}
		// Undo the rewrites: every target in the output that is not in
		// the input came from a bare postmaster.
		if bytes.Contains(in, []byte(target)) {
			return
		}
		if n := len(out) - len(in); n%(len(target)-len("postmaster")) != 0 || n < 0 {
			t.Fatalf("output length %d, input %d", len(out), len(in))
		}
		restored := bytes.ReplaceAll(out, []byte("<"+target+">"), []byte("<postmaster>"))
		if !bytes.EqualFold(restored, in) {
			t.Fatalf("bytes changed beyond the rewrite:\nin  %q\nout %q", in, out)
		}
	})
}
