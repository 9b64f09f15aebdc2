package imap

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// nestedMessage builds a message whose multiparts nest depth levels deep.
func nestedMessage(depth int) string {
	var sb strings.Builder
	sb.WriteString("From: deep@example.net\r\nSubject: deep\r\nMIME-Version: 1.0\r\n")
	for i := 0; i < depth; i++ {
		sb.WriteString("Content-Type: multipart/mixed; boundary=b" + itoaTest(i) + "\r\n\r\n--b" + itoaTest(i) + "\r\n")
	}
	sb.WriteString("Content-Type: text/plain\r\n\r\nneedle at the bottom\r\n")
	for i := depth - 1; i >= 0; i-- {
		sb.WriteString("--b" + itoaTest(i) + "--\r\n")
	}
	return sb.String()
}

// wideMessage builds a multipart with n empty parts.
func wideMessage(n int) string {
	var sb strings.Builder
	sb.WriteString("From: wide@example.net\r\nSubject: wide\r\nContent-Type: multipart/mixed; boundary=w\r\n\r\n")
	for i := 0; i < n; i++ {
		sb.WriteString("--w\r\n\r\nx\r\n")
	}
	sb.WriteString("--w--\r\n")
	return sb.String()
}

func itoaTest(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// TestGarbageInput sends malformed and hostile input. Each case runs on
// its own connection, which must either answer with a protocol error and
// keep working, or close cleanly; the server must stay up and never panic.
func TestGarbageInput(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 2)
	deepPart := strings.TrimSuffix(strings.Repeat("1.", 300), ".")
	// then, when set, is sent after input: the library reads quoted
	// strings across line ends, and after refusing a literal it discards
	// the rest of the line, so some inputs wait for one more line.
	cases := []struct {
		name, input, then string
	}{
		{"empty line", "\r\n", ""},
		{"tag only", "a1\r\n", ""},
		{"binary junk", "\x00\xff\xfe\x01\x02 \x80\x81\r\n", ""},
		{"unknown command", "a1 FROBNICATE now\r\n", ""},
		{"select without name", "a1 SELECT\r\n", ""},
		{"unterminated quote", "a1 SELECT \"INBOX\r\n", "\"\r\n"},
		{"unbalanced fetch", "a1 FETCH 1:* (((((FLAGS\r\n", ""},
		{"bad section", "a1 FETCH 1 BODY[\r\n", ""},
		{"bad sequence", "a1 FETCH 0:-5 FLAGS\r\n", ""},
		{"huge sequence", "a1 FETCH 1:4294967295 FLAGS\r\n", ""},
		{"deep section", "a1 FETCH 1 BODY.PEEK[" + deepPart + "]\r\n", ""},
		{"deep search", "a1 SEARCH " + strings.Repeat("NOT ", 3000) + "ALL\r\n", ""},
		{"nested lists", "a1 SEARCH " + strings.Repeat("(", 2000) + "ALL" + strings.Repeat(")", 2000) + "\r\n", ""},
		{"pathological pattern", "a1 LIST \"\" \"" + strings.Repeat("*a", 500) + "b\"\r\n", ""},
		{"oversized line", "a1 NOOP " + strings.Repeat("x", 60<<10) + "\r\n", ""},
		{"oversized literal", "a1 LOGIN {100000}\r\n", "\r\n"},
		{"literal plus too big", "a1 SELECT {100000+}\r\n", "\r\n"},
		{"store bad flag", "a1 STORE 1 +FLAGS (\\Seen\r\n", ""},
		{"append no literal", "a1 APPEND INBOX (\\Seen) \"bad date\" x\r\n", ""},
		{"idle then junk", "a1 IDLE\r\nnot done\r\n", ""},
		{"authenticate junk", "a1 AUTHENTICATE PLAIN\r\n!!!!\r\n", ""},
		{"copy to nowhere", "a1 COPY 1:* \"\"\r\n", ""},
		{"status unknown item", "a1 STATUS INBOX (BOGUS)\r\n", ""},
		{"enable junk", "a1 ENABLE ((((\r\n", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, ts.addr)
			rc.mustOK("LOGIN " + testUser + " " + testPassword)
			rc.mustOK("SELECT INBOX")
			rc.send(tc.input)
			if tc.then != "" {
				rc.send(tc.then)
			}
			// Read until the tagged answer or the end of the connection.
			rc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			closed := false
			for {
				l, err := rc.r.ReadString('\n')
				if err != nil {
					if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset") {
						closed = true
						break
					}
					t.Fatalf("read: %v", err)
				}
				// Input without a valid tag is answered untagged.
				if strings.HasPrefix(l, "a1 ") || strings.HasPrefix(l, "* BYE") || strings.HasPrefix(l, "* BAD") {
					break
				}
				if strings.HasPrefix(l, "+ ") && strings.Contains(tc.input, "IDLE") {
					continue
				}
			}
			if closed {
				return
			}
			// If the connection is still open it must still work.
			rc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			rc.tag = 100
			rc.send("z1 NOOP\r\n")
			for {
				l, err := rc.r.ReadString('\n')
				if err != nil {
					return // closed after the error: fine
				}
				if strings.HasPrefix(l, "z1 ") {
					if !strings.HasPrefix(l, "z1 OK") && !strings.HasPrefix(l, "z1 BAD") {
						t.Errorf("NOOP after garbage: %q", l)
					}
					return
				}
			}
		})
	}

	t.Run("unknown command before login", func(t *testing.T) {
		rc := dialRaw(t, ts.addr)
		rc.send("a1 GET / HTTP/1.0\r\n")
		rc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		data, _ := io.ReadAll(rc.r)
		if !strings.Contains(string(data), "BYE") {
			t.Errorf("no BYE for a cross-protocol request: %q", data)
		}
	})

	// The server survived all of it.
	c := ts.login(t, nil)
	if data := selectMailbox(t, c, "INBOX", false); data.NumMessages != 2 {
		t.Errorf("INBOX after garbage: %d messages", data.NumMessages)
	}
	if logs := ts.logs.String(); strings.Contains(logs, "panic") {
		t.Errorf("server panicked:\n%s", logs)
	}
}

// TestHostileMIME stores messages whose structure the library's recursive
// parser must not see whole, and checks they are still served.
func TestHostileMIME(t *testing.T) {
	ts := newTestServer(t)
	ts.deliver(t, nestedMessage(3))
	ts.deliver(t, nestedMessage(maxMIMEDepth+50))
	ts.deliver(t, wideMessage(maxMIMEParts+10))
	ts.deliver(t, "Subject: empty multipart\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\nno parts at all\r\n")
	ts.deliver(t, "Subject: no type\r\nContent-Type: ;;;\r\n\r\nbody\r\n")
	c := ts.login(t, nil)
	selectMailbox(t, c, "INBOX", false)

	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{
		BodyStructure: &imap.FetchItemBodyStructure{Extended: true}, Envelope: true,
	}).Collect()
	if err != nil || len(msgs) != 5 {
		t.Fatalf("fetch bodystructures: %d %v", len(msgs), err)
	}
	depth := 0
	for bs := msgs[0].BodyStructure; ; depth++ {
		mp, ok := bs.(*imap.BodyStructureMultiPart)
		if !ok {
			break
		}
		bs = mp.Children[0]
	}
	if depth != 3 {
		t.Errorf("shallow nesting: depth %d, want 3", depth)
	}
	for _, i := range []int{1, 2} {
		sp, ok := msgs[i].BodyStructure.(*imap.BodyStructureSinglePart)
		if !ok || sp.Type != "application" || sp.Subtype != "octet-stream" {
			t.Errorf("message %d over the MIME limits: %#v", i+1, msgs[i].BodyStructure)
		}
	}
	if mp, ok := msgs[3].BodyStructure.(*imap.BodyStructureMultiPart); !ok || len(mp.Children) != 1 {
		t.Errorf("empty multipart: %#v", msgs[3].BodyStructure)
	}
	if sp, ok := msgs[4].BodyStructure.(*imap.BodyStructureSinglePart); !ok || sp.Type == "" || sp.Subtype == "" {
		t.Errorf("bad content type: %#v", msgs[4].BodyStructure)
	}

	// Text search still finds what is inside, via the raw fallback.
	data, err := c.Search(&imap.SearchCriteria{Body: []string{"needle at the bottom"}}, nil).Wait()
	if err != nil || len(data.AllSeqNums()) != 2 {
		t.Errorf("search in nested messages: %v %v", data, err)
	}
	// A section path within the limit is served from the deep message.
	sec := &imap.FetchItemBodySection{Peek: true, Part: []int{1, 1, 1}}
	m := fetchOne(t, c, imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{sec}})
	if got := string(m.FindBodySection(sec)); got != "needle at the bottom" {
		t.Errorf("BODY[1.1.1] = %q", got)
	}
}

func TestServerClose(t *testing.T) {
	ts := newTestServer(t)
	c := ts.login(t, nil)
	selectMailbox(t, c, "INBOX", false)
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ts.srv.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("close did not return with an idling client")
	}
	select {
	case <-c.Closed():
	case <-time.After(10 * time.Second):
		t.Fatal("client connection not closed")
	}
	idle.Close()
	if err := ts.srv.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.Serve(ln); err != nil {
		t.Errorf("serve after close: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("listener still open after serve on a closed server")
	}
}
