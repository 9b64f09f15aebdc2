package outbound

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// stallServer is a loopback SMTP server that answers the greeting,
// EHLO, MAIL, RCPT and DATA and then stalls: with readText it reads the
// message text up to the final dot and never replies; without, it stops
// reading at all after its 354. It counts the transactions that reached
// DATA; it never accepts a message.
type stallServer struct {
	ln       net.Listener
	readText bool
	done     chan struct{} // closed when the test ends

	mu    sync.Mutex
	datas int
	conns []net.Conn
}

func startStallServer(t *testing.T, readText bool) (*stallServer, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stallServer{ln: ln, readText: readText, done: make(chan struct{})}
	go s.serve()
	t.Cleanup(func() {
		ln.Close()
		close(s.done)
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	return s, ln.Addr().(*net.TCPAddr).Port
}

func (s *stallServer) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4096) // fill up soon once it stops reading
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		go s.session(c)
	}
}

func (s *stallServer) session(c net.Conn) {
	r := bufio.NewReaderSize(c, 512)
	write := func(l string) { _, _ = c.Write([]byte(l + "\r\n")) }
	write("220 mx.remote.test ESMTP stall")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			write("250-mx.remote.test")
			write("250 8BITMIME")
		case strings.HasPrefix(cmd, "MAIL"), strings.HasPrefix(cmd, "RCPT"):
			write("250 OK")
		case cmd == "DATA":
			s.mu.Lock()
			s.datas++
			s.mu.Unlock()
			write("354 go ahead")
			if !s.readText {
				// Never read again: the client's writes block once the
				// socket buffers are full, until the test ends.
				<-s.done
				return
			}
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			// The final dot is in; no reply ever comes. Read on so
			// that a QUIT or a close is seen.
			_, _ = r.ReadString('\n')
			return
		case cmd == "QUIT":
			write("221 bye")
			return
		default:
			write("502 not here")
		}
	}
}

func (s *stallServer) dataCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.datas
}

// TestStallMidDATA: a remote MTA that stalls mid-DATA (before or after
// the final dot) ends the attempt within the data timeouts, not the
// attempt timeout, as a temporary failure that says what happened; the
// recipient stays queued, and a later attempt to a healthy MX delivers
// the message exactly once.
func TestStallMidDATA(t *testing.T) {
	cases := []struct {
		name     string
		readText bool
		size     int
		want     string
	}{
		// The server takes the text but never answers the final dot.
		{"after final dot", true, 1 << 10, "No reply from mx2.remote.test within 1s after the message was sent"},
		// The server stops reading the text: the client's writes stall.
		{"mid text", false, 16 << 20, "mx2.remote.test stopped taking the message text (no progress for 1s)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stall, stallPort := startStallServer(t, tc.readText)
			d := testDeliverer(t, stallPort, nil)
			d.cfg.CommandTimeout = 5 * time.Second
			d.cfg.DataBlockTimeout = time.Second
			d.cfg.DataTimeout = time.Second
			body := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n", tc.size/64)
			msg := []byte("From: <alice@example.test>\r\nSubject: stall\r\n\r\n" + body)
			st := schema.OutboundState{From: "alice@example.test"}
			rcpts := []string{"bob@remote.test"}

			// The test's own bound; the data timeouts must end the
			// attempt long before it (a context error would give
			// another reply text).
			ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
			defer cancel()
			res := d.sendDomain(ctx, d.log, "remote.test", st, rcpts, unsigned(msg))
			if ctx.Err() != nil {
				t.Fatalf("attempt outlived the test's bound: %+v", res)
			}
			if len(res) != 1 || res[0].status != schema.RecipientQueued || res[0].code != 451 || res[0].enhanced != "4.4.2" {
				t.Fatalf("stalled remote: %+v, want the recipient queued with 451 4.4.2", res)
			}
			if res[0].reply != tc.want || res[0].remote != "mx2.remote.test" {
				t.Fatalf("reply %q from %q, want %q", res[0].reply, res[0].remote, tc.want)
			}
			// Both MX hosts (the same stalled server) got as far as DATA.
			if n := stall.dataCount(); n != 2 {
				t.Fatalf("stalled server saw %d DATA commands, want 2 (one per MX)", n)
			}

			// The next attempt finds a healthy MX: delivered, once.
			be, port := startTLSServer(t)
			d.cfg.Port = port
			res = d.sendDomain(ctx, d.log, "remote.test", st, rcpts, unsigned(msg))
			if len(res) != 1 || res[0].status != schema.RecipientDelivered {
				t.Fatalf("healthy remote: %+v, want delivered", res)
			}
			be.mu.Lock()
			defer be.mu.Unlock()
			if len(be.msgs) != 1 || len(be.rcpts) != 1 || be.rcpts[0] != "bob@remote.test" || !strings.Contains(be.msgs[0], "Subject: stall") {
				t.Fatalf("healthy remote got %d messages for %v, want one for bob", len(be.msgs), be.rcpts)
			}
		})
	}
}
