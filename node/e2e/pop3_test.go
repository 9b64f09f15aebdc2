package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// TestPOP3 drives every POP3 command with Python's poplib against the
// real binary: CAPA, STLS, USER/PASS, AUTH PLAIN (with and without an
// initial response), STAT, LIST, UIDL, TOP, RETR, DELE, RSET, NOOP and
// QUIT, and shows that deletions are committed at QUIT only.
func TestPOP3(t *testing.T) {
	t.Parallel()
	n := sharedNode(t)
	user, pass := n.newUser(t, "pop3")
	for i := 1; i <= 3; i++ {
		body := fmt.Sprintf("message %d\nline two\nline three\n.starts with a dot\n", i)
		// The first comes with the null reverse-path, as bounces do.
		from := "x@remote.example"
		if i == 1 {
			from = ""
		}
		smtpSend(t, n, from, []string{user}, simpleMessage("x@remote.example", user, fmt.Sprintf("pop %d", i), body))
	}
	// What IMAP sees, to compare sizes and bytes with.
	ic := imapDialTLS(t, n, user, pass, nil)
	selectBox(t, ic, "INBOX", true)
	whole := &imap.FetchItemBodySection{Peek: true}
	imapMsgs := fetchAll(t, ic, &imap.FetchOptions{RFC822Size: true, BodySection: []*imap.FetchItemBodySection{whole}})
	if len(imapMsgs) != 3 {
		t.Fatalf("IMAP sees %d messages", len(imapMsgs))
	}
	totalSize := 0
	for _, m := range imapMsgs {
		totalSize += int(m.RFC822Size)
	}

	// Without TLS, no credentials are accepted.
	s := pop3Run(t, n, "none", step("capa"), step("user", user), step("auth_plain_ir", user, pass), step("quit"))
	if _, ok := s.Results[0].Capa["USER"]; ok {
		t.Errorf("CAPA before TLS offers USER: %v", s.Results[0].Capa)
	}
	if s.Results[1].OK || s.Results[2].OK {
		t.Errorf("credentials accepted before TLS: USER %+v, AUTH %+v", s.Results[1], s.Results[2])
	}
	if !strings.HasPrefix(s.Greeting, "+OK") {
		t.Errorf("greeting %q", s.Greeting)
	}

	// One session over STLS that marks, unmarks and marks again, then
	// ends without QUIT: nothing may be deleted.
	s = pop3Run(t, n, "stls",
		step("stls"),                 // 0
		step("capa"),                 // 1
		step("user", user),           // 2
		step("pass", "wrong-pass"),   // 3
		step("user", user),           // 4
		step("pass", pass),           // 5
		step("stat"),                 // 6
		step("list"),                 // 7
		step("list", 2),              // 8
		step("uidl"),                 // 9
		step("uidl", 2),              // 10
		step("top", 1, 0),            // 11
		step("top", 1, 2),            // 12
		step("retr", 2),              // 13
		step("noop"),                 // 14
		step("dele", 1),              // 15
		step("stat"),                 // 16
		step("retr", 1),              // 17
		step("list", 1),              // 18
		step("rset"),                 // 19
		step("stat"),                 // 20
		step("dele", 3),              // 21
		step("raw", "BOGUS command"), // 22
	)
	r := s.Results
	for i, want := range []bool{true, true, true, false, true, true, true, true, true, true, true, true, true, true, true, true, true, false, false, true, true, true, false} {
		if r[i].OK != want {
			t.Errorf("step %v: ok=%v (%s%s), want ok=%v", s.Steps[i], r[i].OK, r[i].Resp, r[i].Error, want)
		}
	}
	capa := r[1].Capa
	for _, c := range []string{"USER", "SASL", "TOP", "UIDL", "PIPELINING", "RESP-CODES"} {
		if _, ok := capa[c]; !ok {
			t.Errorf("CAPA after STLS lacks %s: %v", c, capa)
		}
	}
	if _, ok := capa["STLS"]; ok {
		t.Errorf("CAPA after STLS still offers STLS")
	}
	if !slices.Contains(capa["SASL"], "PLAIN") {
		t.Errorf("CAPA SASL %v, want PLAIN", capa["SASL"])
	}
	if r[6].Count != 3 || r[6].Size != totalSize {
		t.Errorf("STAT %d %d, want 3 %d", r[6].Count, r[6].Size, totalSize)
	}
	wantList := []string{}
	for i, m := range imapMsgs {
		wantList = append(wantList, fmt.Sprintf("%d %d", i+1, m.RFC822Size))
	}
	if !slices.Equal(r[7].Lines, wantList) {
		t.Errorf("LIST %q, want %q", r[7].Lines, wantList)
	}
	if r[8].Resp != "+OK "+wantList[1] {
		t.Errorf("LIST 2: %q, want +OK %s", r[8].Resp, wantList[1])
	}
	uidls := r[9].Lines
	if len(uidls) != 3 || r[10].Resp != "+OK "+uidls[1] {
		t.Errorf("UIDL %q, UIDL 2 %q", uidls, r[10].Resp)
	}
	msg1 := string(imapMsgs[0].FindBodySection(whole))
	header1, body1, _ := strings.Cut(msg1, "\r\n\r\n")
	if !strings.HasPrefix(header1, "Return-Path: <>\r\n") {
		t.Errorf("message from the null reverse-path starts %.40q", header1)
	}
	if got := strings.Join(r[11].Lines, "\r\n"); got != header1+"\r\n" {
		t.Errorf("TOP 1 0:\n got %q\nwant %q", got, header1+"\r\n")
	}
	bodyLines := strings.Split(body1, "\r\n")
	if got, want := r[12].Lines[len(r[12].Lines)-2:], bodyLines[:2]; !slices.Equal(got, want) {
		t.Errorf("TOP 1 2 ends %q, want %q", got, want)
	}
	// poplib undoes the dot-stuffing; RETR must give back the stored bytes.
	if got, want := strings.Join(r[13].Lines, "\r\n")+"\r\n", string(imapMsgs[1].FindBodySection(whole)); got != want {
		t.Errorf("RETR 2:\n got %q\nwant %q", got, want)
	}
	if r[16].Count != 2 || r[20].Count != 3 {
		t.Errorf("STAT after DELE %d, after RSET %d; want 2 and 3", r[16].Count, r[20].Count)
	}

	// Not deleted without QUIT. AUTH PLAIN with an initial response over
	// implicit TLS; DELE then QUIT commits.
	s = pop3Run(t, n, "implicit", step("auth_plain_ir", user, pass), step("stat"), step("dele", 2), step("quit")).mustOK(t)
	if s.Results[1].Count != 3 {
		t.Fatalf("STAT after a session without QUIT: %d, want 3", s.Results[1].Count)
	}
	if !strings.HasPrefix(s.Results[3].Resp, "+OK") {
		t.Errorf("QUIT: %q", s.Results[3].Resp)
	}

	// AUTH PLAIN answering the continuation; the deletion is there.
	s = pop3Run(t, n, "implicit", step("auth_plain", user, pass), step("stat"), step("uidl"), step("quit")).mustOK(t)
	if want := []string{uidlIDs(uidls)[0], uidlIDs(uidls)[2]}; s.Results[1].Count != 2 || !slices.Equal(uidlIDs(s.Results[2].Lines), want) {
		t.Errorf("after DELE 2 + QUIT: STAT %d, UIDL %q; want 2, %q", s.Results[1].Count, s.Results[2].Lines, want)
	}
	selectBox(t, ic, "INBOX", true)
	if got := subjects(t, ic); !slices.Equal(got, []string{"pop 1", "pop 3"}) {
		t.Errorf("IMAP after POP3 QUIT: %q", got)
	}
}
