package smtp

import (
	"bytes"
	"strings"
	"testing"
)

// countingConn is a fuzzConn that counts the writes the front makes.
type countingConn struct {
	fuzzConn
	writes int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes++
	return c.fuzzConn.Write(p)
}

// readCommand reads one command line from the front as go-smtp does.
func readCommand(t *testing.T, front *frontConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := front.Read(buf)
	if n == 0 {
		t.Fatalf("no command: %v", err)
	}
	return string(buf[:n])
}

// answeredFirst runs a front on the client bytes in, reads its first
// command the way go-smtp does and answers it with reply.
func answeredFirst(t *testing.T, srv *Server, in, reply string) (*countingConn, *frontConn) {
	t.Helper()
	c := &countingConn{fuzzConn: fuzzConn{r: strings.NewReader(in)}}
	front := srv.newFrontConn(c)
	readCommand(t, front)
	answer(t, front, reply)
	return c, front
}

// TestPipelinedRepliesGrouped: the replies to a pipelined MAIL and RCPTs
// reach the client in one write with the 354 to the DATA that ends the
// group; a command sent alone gets its reply at once; a reply held back
// goes out before the front waits for more of the client, and when the
// connection closes.
func TestPipelinedRepliesGrouped(t *testing.T) {
	srv := &Server{cfg: Config{MaxLineLength: DefaultMaxLineLength}}
	const ok = "250 2.0.0 OK\r\n"

	t.Run("group", func(t *testing.T) {
		c := &countingConn{fuzzConn: fuzzConn{r: strings.NewReader("MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<e@d.test>\r\nDATA\r\n")}}
		front := srv.newFrontConn(c)
		for _, want := range []string{"MAIL", "RCPT", "RCPT"} {
			if got := readCommand(t, front); !strings.HasPrefix(got, want) {
				t.Fatalf("handed %q, want %s", got, want)
			}
			answer(t, front, ok)
			if c.writes != 0 {
				t.Fatalf("the reply to %s was written while the group was still being read", want)
			}
		}
		if got := readCommand(t, front); got != "BDAT 0\r\n" {
			t.Fatalf("DATA handed on as %q", got)
		}
		answer(t, front, "250 2.0.0 Continue\r\n")
		if want := ok + ok + ok + dataReady; c.writes != 1 || c.out.String() != want {
			t.Fatalf("%d writes of %q, want one of %q", c.writes, c.out.String(), want)
		}
	})

	t.Run("alone", func(t *testing.T) {
		c, _ := answeredFirst(t, srv, "MAIL FROM:<a@b.test>\r\n", ok)
		if c.writes != 1 || c.out.String() != ok {
			t.Fatalf("%d writes of %q, want the reply at once", c.writes, c.out.String())
		}
	})

	t.Run("before waiting", func(t *testing.T) {
		// The client has sent part of its next line and waits.
		c, front := answeredFirst(t, srv, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@", ok)
		if c.writes != 0 {
			t.Fatal("the reply to MAIL was written while a RCPT was being received")
		}
		readCommand(t, front) // reads from the connection again
		if c.writes != 1 || c.out.String() != ok {
			t.Fatalf("%d writes of %q before reading the connection again, want the held reply", c.writes, c.out.String())
		}
	})

	t.Run("close", func(t *testing.T) {
		c, front := answeredFirst(t, srv, "RSET\r\nNOOP\r\n", ok)
		if err := front.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.out.Bytes(), []byte(ok)) {
			t.Fatalf("client got %q after close, want the held reply", c.out.String())
		}
	})
}

// TestPipelinedGroupEndToEnd sends MAIL, RCPT and DATA in one write to
// the MX port, then the message, as a pipelining MTA does; every reply
// arrives in order and the message is stored.
func TestPipelinedGroupEndToEnd(t *testing.T) {
	f := newFixture(t)
	addr, _ := f.start(f.config(ModeMX), false)
	r := dialRaw(t, addr, nil)
	r.mustCmd(250, "EHLO client.example")
	for i := range 2 {
		r.send("MAIL FROM:<" + remote + ">\r\nRCPT TO:<" + alice + ">\r\nRCPT TO:<nobody-here@example.test>\r\nDATA\r\n")
		r.expect(250)
		r.expect(250)
		r.expect(550)
		r.expect(354)
		r.send("From: <" + remote + ">\r\nSubject: pipelined-" + itoa(i) + "\r\n\r\nbody\r\n.\r\n")
		r.expect(250)
	}
	r.mustCmd(221, "QUIT")
	msgs := f.inbox(alice, alicePW)
	findMessage(t, msgs, "pipelined-0")
	findMessage(t, msgs, "pipelined-1")
}
