package imap

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// attachment is the binary content of the test message's second part.
var attachmentBytes = []byte("%PDF-1.4\n%\xc7\xec\x8f\xa2\n5 0 obj\n<< /Length 6 >>\nstream\nBT ET\nendstream\n")

const partOne = "Hello Alice, here=\r\n is the report.\r\n"

// multipartMessage is a text part plus a base64 PDF attachment.
func multipartMessage() string {
	return "From: \"Carol Sender\" <carol@example.net>\r\n" +
		"To: Alice <alice@example.org>\r\n" +
		"Cc: dave@example.net\r\n" +
		"Subject: Quarterly report\r\n" +
		"Date: Wed, 10 Jan 2024 09:30:00 +0100\r\n" +
		"Message-ID: <report-1@example.net>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"outer\"\r\n" +
		"\r\n" +
		"--outer\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: quoted-printable\r\n" +
		"\r\n" +
		partOne +
		"--outer\r\n" +
		"Content-Type: application/pdf; name=\"report.pdf\"\r\n" +
		"Content-Disposition: attachment; filename=\"report.pdf\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"\r\n" +
		base64.StdEncoding.EncodeToString(attachmentBytes) + "\r\n" +
		"--outer--\r\n"
}

func fetchOne(t *testing.T, c *imapclient.Client, set imap.NumSet, options *imap.FetchOptions) *imapclient.FetchMessageBuffer {
	t.Helper()
	msgs, err := c.Fetch(set, options).Collect()
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	if len(msgs) != 1 {
		t.Fatalf("fetch returned %d messages", len(msgs))
	}
	return msgs[0]
}

func hasFlag(flags []imap.Flag, f imap.Flag) bool {
	for _, x := range flags {
		if strings.EqualFold(string(x), string(f)) {
			return true
		}
	}
	return false
}

func TestFetchMultipart(t *testing.T) {
	ts := newTestServer(t)
	msg := multipartMessage()
	ts.deliver(t, msg)
	c := ts.login(t, nil)
	selectMailbox(t, c, "INBOX", false)
	one := imap.SeqSetNum(1)

	t.Run("metadata and envelope", func(t *testing.T) {
		m := fetchOne(t, c, one, &imap.FetchOptions{Flags: true, InternalDate: true, RFC822Size: true, Envelope: true, UID: true})
		if m.RFC822Size != int64(len(msg)) {
			t.Errorf("RFC822.SIZE %d, want %d", m.RFC822Size, len(msg))
		}
		// New to the first session that selects the mailbox: \Recent.
		if m.UID != 1 || len(m.Flags) != 1 || !hasFlag(m.Flags, `\Recent`) || time.Since(m.InternalDate) > time.Hour {
			t.Errorf("UID %d flags %v internal date %v", m.UID, m.Flags, m.InternalDate)
		}
		e := m.Envelope
		if e == nil || e.Subject != "Quarterly report" || e.MessageID != "report-1@example.net" {
			t.Fatalf("envelope %+v", e)
		}
		if len(e.From) != 1 || e.From[0].Name != "Carol Sender" || e.From[0].Mailbox != "carol" || e.From[0].Host != "example.net" {
			t.Errorf("from %+v", e.From)
		}
		if len(e.To) != 1 || e.To[0].Addr() != "alice@example.org" || len(e.Cc) != 1 || e.Cc[0].Addr() != "dave@example.net" {
			t.Errorf("to %+v cc %+v", e.To, e.Cc)
		}
		if want := time.Date(2024, 1, 10, 8, 30, 0, 0, time.UTC); !e.Date.Equal(want) {
			t.Errorf("date %v, want %v", e.Date, want)
		}
	})

	t.Run("bodystructure", func(t *testing.T) {
		m := fetchOne(t, c, one, &imap.FetchOptions{BodyStructure: &imap.FetchItemBodyStructure{Extended: true}})
		mp, ok := m.BodyStructure.(*imap.BodyStructureMultiPart)
		if !ok || !strings.EqualFold(mp.Subtype, "mixed") || len(mp.Children) != 2 {
			t.Fatalf("bodystructure %#v", m.BodyStructure)
		}
		text, ok := mp.Children[0].(*imap.BodyStructureSinglePart)
		if !ok || !strings.EqualFold(text.Type, "text") || !strings.EqualFold(text.Subtype, "plain") ||
			!strings.EqualFold(text.Encoding, "quoted-printable") || text.Params["charset"] != "utf-8" || text.Size != uint32(len(partOne)-2) {
			t.Errorf("part 1 %#v", mp.Children[0])
		}
		pdf, ok := mp.Children[1].(*imap.BodyStructureSinglePart)
		if !ok || !strings.EqualFold(pdf.Subtype, "pdf") || pdf.Extended == nil || pdf.Extended.Disposition == nil ||
			!strings.EqualFold(pdf.Extended.Disposition.Value, "attachment") || pdf.Extended.Disposition.Params["filename"] != "report.pdf" {
			t.Errorf("part 2 %#v", mp.Children[1])
		}
		if n, _ := ts.srv.bsCache.stats(); n != 1 {
			t.Errorf("cache holds %d structures, want 1", n)
		}
		// BODY (non-extended) is served too.
		m = fetchOne(t, c, one, &imap.FetchOptions{BodyStructure: &imap.FetchItemBodyStructure{}})
		if _, ok := m.BodyStructure.(*imap.BodyStructureMultiPart); !ok {
			t.Errorf("BODY %#v", m.BodyStructure)
		}
	})

	t.Run("sections", func(t *testing.T) {
		headerEnd := strings.Index(msg, "\r\n\r\n") + 4
		sections := []struct {
			name    string
			section *imap.FetchItemBodySection
			want    func(b []byte) bool
		}{
			{"whole", &imap.FetchItemBodySection{Peek: true}, func(b []byte) bool { return string(b) == msg }},
			{"header", &imap.FetchItemBodySection{Peek: true, Specifier: imap.PartSpecifierHeader}, func(b []byte) bool { return string(b) == msg[:headerEnd] }},
			{"text", &imap.FetchItemBodySection{Peek: true, Specifier: imap.PartSpecifierText}, func(b []byte) bool { return string(b) == msg[headerEnd:] }},
			{"part 1", &imap.FetchItemBodySection{Peek: true, Part: []int{1}}, func(b []byte) bool { return string(b) == strings.TrimSuffix(partOne, "\r\n") }},
			{"part 2 mime", &imap.FetchItemBodySection{Peek: true, Part: []int{2}, Specifier: imap.PartSpecifierMIME}, func(b []byte) bool {
				return bytes.Contains(b, []byte("Content-Disposition: attachment")) && !bytes.Contains(b, []byte("Subject"))
			}},
			{"header fields", &imap.FetchItemBodySection{Peek: true, Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"subject", "From"}}, func(b []byte) bool {
				return string(b) == "From: \"Carol Sender\" <carol@example.net>\r\nSubject: Quarterly report\r\n\r\n"
			}},
			{"header fields not", &imap.FetchItemBodySection{Peek: true, Specifier: imap.PartSpecifierHeader, HeaderFieldsNot: []string{"Subject", "Content-Type"}}, func(b []byte) bool {
				return bytes.Contains(b, []byte("Message-ID:")) && !bytes.Contains(b, []byte("Subject:")) && !bytes.Contains(b, []byte("Content-Type:"))
			}},
			{"partial", &imap.FetchItemBodySection{Peek: true, Partial: &imap.SectionPartial{Offset: 6, Size: 14}}, func(b []byte) bool { return string(b) == msg[6:20] }},
			{"partial past end", &imap.FetchItemBodySection{Peek: true, Partial: &imap.SectionPartial{Offset: 1 << 20, Size: 10}}, func(b []byte) bool { return len(b) == 0 }},
			{"missing part", &imap.FetchItemBodySection{Peek: true, Part: []int{7}}, func(b []byte) bool { return len(b) == 0 }},
		}
		for _, tc := range sections {
			t.Run(tc.name, func(t *testing.T) {
				m := fetchOne(t, c, one, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{tc.section}})
				if b := m.FindBodySection(tc.section); !tc.want(b) {
					t.Errorf("got %q", b)
				}
			})
		}
	})

	t.Run("binary", func(t *testing.T) {
		sec := &imap.FetchItemBinarySection{Part: []int{2}, Peek: true}
		m := fetchOne(t, c, one, &imap.FetchOptions{
			BinarySection:     []*imap.FetchItemBinarySection{sec},
			BinarySectionSize: []*imap.FetchItemBinarySectionSize{{Part: []int{2}}, {Part: []int{1}}},
		})
		if b := m.FindBinarySection(sec); !bytes.Equal(b, attachmentBytes) {
			t.Errorf("BINARY[2] = %q", b)
		}
		if n, ok := m.FindBinarySectionSize([]int{2}); !ok || n != uint32(len(attachmentBytes)) {
			t.Errorf("BINARY.SIZE[2] = %d %v, want %d", n, ok, len(attachmentBytes))
		}
		if n, ok := m.FindBinarySectionSize([]int{1}); !ok || n != uint32(len("Hello Alice, here is the report.")) {
			t.Errorf("BINARY.SIZE[1] = %d %v", n, ok)
		}
	})

	t.Run("binary of unknown encoding", func(t *testing.T) {
		ts.deliver(t, "Subject: uu\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 f\r\nend\r\n")
		if err := c.Noop().Wait(); err != nil {
			t.Fatal(err)
		}
		sec := &imap.FetchItemBinarySection{Peek: true}
		_, err := c.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{BinarySection: []*imap.FetchItemBinarySection{sec}}).Collect()
		if imapCode(err) != imap.ResponseCodeUnknownCTE {
			t.Errorf("BINARY[] of x-uuencode: got %v, want UNKNOWN-CTE", err)
		}
		// BODY[] still serves it as stored.
		body := &imap.FetchItemBodySection{Peek: true}
		m := fetchOne(t, c, imap.SeqSetNum(2), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{body}})
		if !strings.Contains(string(m.FindBodySection(body)), "begin 644 f") {
			t.Errorf("BODY[] of x-uuencode: %q", m.FindBodySection(body))
		}
	})

	t.Run("peek leaves seen alone", func(t *testing.T) {
		m := fetchOne(t, c, one, &imap.FetchOptions{Flags: true})
		if hasFlag(m.Flags, imap.FlagSeen) {
			t.Fatalf("PEEK fetches set \\Seen: %v", m.Flags)
		}
	})

	t.Run("body sets seen", func(t *testing.T) {
		sec := &imap.FetchItemBodySection{Part: []int{1}}
		m := fetchOne(t, c, one, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{sec}})
		if !hasFlag(m.Flags, imap.FlagSeen) {
			t.Errorf("FETCH BODY[1] response lacks FLAGS (\\Seen): %v", m.Flags)
		}
		m = fetchOne(t, c, one, &imap.FetchOptions{Flags: true})
		if !hasFlag(m.Flags, imap.FlagSeen) {
			t.Errorf("\\Seen not stored: %v", m.Flags)
		}
	})

	t.Run("out of range", func(t *testing.T) {
		_, err := c.Fetch(imap.SeqSetNum(5), &imap.FetchOptions{Flags: true}).Collect()
		if err == nil || err.(*imap.Error).Type != imap.StatusResponseTypeBad {
			t.Errorf("FETCH 5 in a 1-message mailbox: %v", err)
		}
		msgs, err := c.Fetch(imap.UIDSetNum(99), &imap.FetchOptions{Flags: true}).Collect()
		if err != nil || len(msgs) != 0 {
			t.Errorf("UID FETCH of a missing UID: %v %v", msgs, err)
		}
	})

	t.Run("legacy items", func(t *testing.T) {
		rc := dialRaw(t, ts.addr)
		rc.mustOK("LOGIN " + testUser + " " + testPassword)
		rc.mustOK("SELECT INBOX")
		cases := []struct{ cmd, want string }{
			{"FETCH 1 RFC822.HEADER", "RFC822.HEADER {"},
			{"FETCH 1 RFC822.TEXT", "RFC822.TEXT {"},
			{"FETCH 1 RFC822", "RFC822 {"},
			{"FETCH 1 RFC822.SIZE", "RFC822.SIZE " + strconv.Itoa(len(msg))},
			{"FETCH 1 BODY", "BODY (("},
			{"FETCH 1 ALL", "ENVELOPE ("},
			{"FETCH 1 FAST", "INTERNALDATE"},
			{"FETCH 1 FULL", "BODY (("},
			{"UID FETCH 1 (FLAGS)", "UID 1"},
		}
		for _, tc := range cases {
			untagged := rc.mustOK(tc.cmd)
			if len(untagged) != 1 || !strings.Contains(untagged[0], tc.want) {
				t.Errorf("%s: %q lacks %q", tc.cmd, untagged, tc.want)
			}
		}
		untagged := rc.mustOK("FETCH 1 RFC822.HEADER")
		if !strings.Contains(untagged[0], "Subject: Quarterly report") {
			t.Errorf("RFC822.HEADER content: %q", untagged[0])
		}
	})
}

func TestExamineIsReadOnly(t *testing.T) {
	ts := newTestServer(t)
	ts.deliver(t, simpleMessage("a@example.net", testUser, "hello", "Mon, 01 Jan 2024 10:00:00 +0000", "text"))
	c := ts.login(t, nil)
	data := selectMailbox(t, c, "INBOX", true)
	if data.NumMessages != 1 || len(data.PermanentFlags) != 0 {
		t.Errorf("EXAMINE data %+v", data)
	}
	sec := &imap.FetchItemBodySection{}
	m := fetchOne(t, c, imap.SeqSetNum(1), &imap.FetchOptions{Flags: true, BodySection: []*imap.FetchItemBodySection{sec}})
	if hasFlag(m.Flags, imap.FlagSeen) {
		t.Errorf("FETCH BODY[] on EXAMINE set \\Seen")
	}
	if _, err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Collect(); err == nil {
		t.Error("STORE on EXAMINE succeeded")
	}
	if err := c.Expunge().Close(); err == nil {
		t.Error("EXPUNGE on EXAMINE succeeded")
	}
	data = selectMailbox(t, c, "INBOX", false)
	if data.NumMessages != 1 {
		t.Errorf("SELECT after EXAMINE: %+v", data)
	}
	m = fetchOne(t, c, imap.SeqSetNum(1), &imap.FetchOptions{Flags: true})
	if hasFlag(m.Flags, imap.FlagSeen) {
		t.Errorf("message seen after EXAMINE: %v", m.Flags)
	}
}

// TestFetchWholeMessageAsStored: BODY[] and RFC822 are the message as
// stored, and BODY[HEADER] and BODY[TEXT] its two sections split at the
// first blank line (RFC 3501 section 6.4.5), partial ranges included,
// even when its header does not parse (a line without a colon), where
// extracting the section through a header parser gave nothing.
func TestFetchWholeMessageAsStored(t *testing.T) {
	rc, msg := brokenHeaderSession(t)
	expectLines(t, rc, map[string]string{
		"FETCH 1 BODY.PEEK[]":            fmt.Sprintf("* 1 FETCH (BODY[] {%d}\r\n%s)", len(msg), msg),
		"FETCH 1 BODY.PEEK[]<6.9>":       "* 1 FETCH (BODY[]<6> {9}\r\n" + msg[6:15] + ")",
		"FETCH 1 BODY.PEEK[]<900.10>":    "* 1 FETCH (BODY[]<900> {0}\r\n)",
		"FETCH 1 BODY.PEEK[HEADER]":      "* 1 FETCH (BODY[HEADER] {61}\r\n" + msg[:61] + ")",
		"FETCH 1 BODY.PEEK[TEXT]":        "* 1 FETCH (BODY[TEXT] {11}\r\n" + msg[61:] + ")",
		"FETCH 1 BODY.PEEK[TEXT]<5.100>": "* 1 FETCH (BODY[TEXT]<5> {6}\r\n" + msg[66:] + ")",
		"FETCH 1 RFC822":                 fmt.Sprintf("* 1 FETCH (FLAGS (\\Seen \\Recent) RFC822 {%d}\r\n%s)", len(msg), msg),
	})
}

// brokenHeaderSession logs in, appends a message whose header has a line
// without a colon, selects INBOX and returns the session and the message.
func brokenHeaderSession(t *testing.T) (*rawConn, string) {
	t.Helper()
	rc := rawLogin(t, newTestServer(t))
	msg := "From: a@example.net\r\nthis line has no colon\r\nSubject: odd\r\n\r\nbody line\r\n"
	rc.mustOK(fmt.Sprintf("APPEND INBOX {%d+}\r\n%s", len(msg), msg))
	rc.mustOK("SELECT INBOX")
	return rc, msg
}

// expectLines sends each command and checks that its one untagged line
// is the one given.
func expectLines(t *testing.T, rc *rawConn, want map[string]string) {
	t.Helper()
	for cmd, line := range want {
		if lines := rc.mustOK(cmd); len(lines) != 1 || lines[0] != line {
			t.Errorf("%s: %q, want %q", cmd, lines, line)
		}
	}
}
