package imap

import (
	"bufio"
	"io"
	"strings"
	"testing"
)

// TestReadHeaderPassesOverBrokenLines: fields after a line without a
// colon are read, continuations and lines longer than the reader's
// buffer are kept, and the reader is left at the body.
func TestReadHeaderPassesOverBrokenLines(t *testing.T) {
	long := strings.Repeat("x", 9000)
	msg := "From someone Wed Jan 10 09:30:00 2024\r\n" +
		"From: a@example.net\r\n" +
		"this line has no colon\r\n" +
		"Subject: first\r\n second\r\n" +
		"X-Long: " + long + "\r\n" +
		"\r\n" +
		"body line\r\n"
	br := bufio.NewReaderSize(strings.NewReader(msg), 16)
	h, err := readHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Get("Subject"); got != "first second" {
		t.Errorf("Subject %q", got)
	}
	if got := h.Get("From"); got != "a@example.net" {
		t.Errorf("From %q", got)
	}
	if got := h.Get("X-Long"); got != long {
		t.Errorf("X-Long has %d bytes, want %d", len(got), len(long))
	}
	if body, _ := io.ReadAll(br); string(body) != "body line\r\n" {
		t.Errorf("body %q", body)
	}
	// The same message for a parser that stops at broken lines: those
	// left out, the rest, body included, as it was; a message without
	// any is returned as it is.
	want := strings.Replace(strings.Replace(msg, "From someone Wed Jan 10 09:30:00 2024\r\n", "", 1), "this line has no colon\r\n", "", 1)
	if got := string(withoutBrokenHeaderLines([]byte(msg))); got != want {
		t.Errorf("withoutBrokenHeaderLines: %q", got)
	}
	clean := []byte(want)
	if got := withoutBrokenHeaderLines(clean); &got[0] != &clean[0] || len(got) != len(clean) {
		t.Error("a message without broken lines was copied")
	}
	// A message that ends within its header.
	h, err = parseHeaderSection([]byte("Subject: only\r\nbroken"))
	if err != nil || h.Get("Subject") != "only" {
		t.Errorf("header without an end: %q, %v", h.Get("Subject"), err)
	}
}

// TestMalformedHeaderLineIgnored: a message whose header has a line
// without a colon gets its ENVELOPE, SEARCH, HEADER.FIELDS and
// BODYSTRUCTURE from all of its header, not from what precedes that line.
func TestMalformedHeaderLineIgnored(t *testing.T) {
	rc, _ := brokenHeaderSession(t)
	expectLines(t, rc, map[string]string{
		"SEARCH SUBJECT odd":                         "* SEARCH 1",
		"SEARCH BODY line":                           "* SEARCH 1",
		"FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]": "* 1 FETCH (BODY[HEADER.FIELDS (\"SUBJECT\")] {16}\r\nSubject: odd\r\n\r\n)",
		"FETCH 1 BODYSTRUCTURE":                      `* 1 FETCH (BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7bit" 11 1 NIL NIL NIL NIL))`,
	})
	// With the whole message loaded (no header record), the fields still
	// come from all of the header.
	lines := rc.mustOK("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT])")
	if want := "BODY[HEADER.FIELDS (\"SUBJECT\")] {16}\r\nSubject: odd\r\n\r\n"; len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Errorf("HEADER.FIELDS beside TEXT: %q, want %q in it", lines, want)
	}
	lines = rc.mustOK("FETCH 1 ENVELOPE")
	if len(lines) != 1 || !strings.Contains(lines[0], `"odd"`) {
		t.Errorf("ENVELOPE %q has no subject", lines)
	}
}
