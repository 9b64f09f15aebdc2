package node

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// fetchUIDs returns the UIDs of the FETCH responses among lines, with
// each one's line.
func fetchUIDs(lines []string) map[uint32]string {
	re := regexp.MustCompile(`^\* \d+ FETCH \(.*\bUID (\d+)`)
	out := map[uint32]string{}
	for _, l := range lines {
		if m := re.FindStringSubmatch(l); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 32)
			out[uint32(n)] = l
		}
	}
	return out
}

// TestThunderbirdAndPhoneSync replays, against a two-node cluster, what
// Thunderbird does on startup and while it runs (capabilities, SASL
// PLAIN, COMPRESS=DEFLATE, ID, ENABLE, LIST of the special-use mailboxes with their
// STATUS, SELECT (CONDSTORE), the flag resync with CHANGEDSINCE, IDLE
// until new mail arrives, reading its headers, \Seen, MOVE to Trash,
// delete and EXPUNGE) on the second node, while mail arrives over SMTP
// and another device changes flags on the first; then a phone that
// synced on the first node before all this comes back with QRESYNC and
// gets exactly what changed (issue 8, "Done means").
func TestThunderbirdAndPhoneSync(t *testing.T) {
	ic := startIMAPCluster(t, "tess@example.test", "tess-mail-pw")
	deliver := func(subject string) {
		t.Helper()
		msg := fmt.Sprintf("From: Carol <carol@sender.test>\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@sender.test>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nbody of %s\r\n", ic.user, subject, subject, subject)
		if err := sendMX(t, ic.n1, ic.cfg1, "carol@sender.test", []string{ic.user}, msg); err != nil {
			t.Fatalf("deliver %s: %v", subject, err)
		}
	}
	for i := 1; i <= 4; i++ {
		deliver("m" + strconv.Itoa(i))
	}

	// The phone syncs on n1 and goes away.
	phone := ic.loginLines(t, ic.n1, ic.cfg1)
	phone.ok("ENABLE QRESYNC")
	sel := phone.ok("SELECT INBOX")
	uv, phoneModSeq := codeNumber(t, sel, "UIDVALIDITY"), codeNumber(t, sel, "HIGHESTMODSEQ")
	if !slices.Contains(sel, "* 4 EXISTS") {
		t.Fatalf("phone's SELECT: %q", sel)
	}
	if got := fetchUIDs(phone.ok("UID FETCH 1:* (FLAGS)")); len(got) != 4 {
		t.Fatalf("phone's first sync: %v", got)
	}
	phone.ok("LOGOUT")

	// Thunderbird starts on n2 (once the user has reached it).
	ic.loginLines(t, ic.n2, ic.cfg2).ok("LOGOUT")
	tb := dialLines(t, ic.n2, ic.cfg2)
	if caps := strings.Fields(strings.Join(tb.ok("capability"), " ")); !slices.Contains(caps, "AUTH=PLAIN") {
		t.Fatalf("capabilities before login: %q", caps)
	}
	tb.tag++
	authTag := "Q" + strconv.Itoa(tb.tag)
	tb.send(authTag + " authenticate PLAIN")
	if l := tb.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("AUTHENTICATE: %q", l)
	}
	tb.send(base64.StdEncoding.EncodeToString([]byte("\x00" + ic.user + "\x00" + ic.password)))
	for l := tb.line(); !strings.HasPrefix(l, authTag+" "); l = tb.line() {
	}
	// Thunderbird compresses the connection first when it may.
	if caps := strings.Fields(strings.Join(tb.ok("capability"), " ")); !slices.Contains(caps, "COMPRESS=DEFLATE") {
		t.Fatalf("COMPRESS=DEFLATE not offered after login: %q", caps)
	}
	tb.compress()
	caps := strings.Fields(strings.Join(tb.ok("capability"), " "))
	for _, c := range []string{"IDLE", "CONDSTORE", "QRESYNC", "SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "MOVE", "UIDPLUS", "ID", "UTF8=ACCEPT", "LITERAL+", "ESEARCH", "PARTIAL"} {
		if !slices.Contains(caps, c) {
			t.Errorf("%s not offered after login: %q", c, caps)
		}
	}
	if got := tb.ok(`ID ("name" "Thunderbird" "version" "128.5.2")`); len(got) != 1 || !strings.HasPrefix(got[0], "* ID (") {
		t.Errorf("ID: %v", got)
	}
	if got := tb.ok("ENABLE UTF8=ACCEPT"); len(got) != 1 || got[0] != "* ENABLED UTF8=ACCEPT" {
		t.Errorf("ENABLE UTF8=ACCEPT: %v", got)
	}
	if got := tb.ok("ENABLE CONDSTORE"); len(got) != 1 || got[0] != "* ENABLED CONDSTORE" {
		t.Errorf("ENABLE CONDSTORE: %v", got)
	}
	list := tb.ok(`list (SPECIAL-USE) "" "*" return (STATUS (MESSAGES UNSEEN UIDNEXT HIGHESTMODSEQ))`)
	for _, want := range []string{`(\HasNoChildren \Trash) "/" "Trash"`, `\Sent) "/" "Sent"`, `\Drafts) "/" "Drafts"`, `\Junk) "/" "Junk"`} {
		if !slices.ContainsFunc(list, func(l string) bool { return strings.HasPrefix(l, "* LIST ") && strings.Contains(l, want) }) {
			t.Errorf("special-use LIST lacks %s: %q", want, list)
		}
	}
	if !slices.ContainsFunc(list, func(l string) bool {
		// The items in any order (RFC 3501 section 7.2.4).
		return strings.HasPrefix(l, `* STATUS "Trash" (`) && strings.Contains(l, "MESSAGES 0") && strings.Contains(l, "UNSEEN 0") &&
			strings.Contains(l, "UIDNEXT 1") && regexp.MustCompile(`HIGHESTMODSEQ \d+\)$`).MatchString(l)
	}) {
		t.Errorf("LIST-STATUS of Trash: %q", list)
	}
	sel = tb.ok(`select "INBOX" (CONDSTORE)`)
	tbModSeq := codeNumber(t, sel, "HIGHESTMODSEQ")
	if !slices.Contains(sel, "* 4 EXISTS") || codeNumber(t, sel, "UIDVALIDITY") != uv {
		t.Fatalf("Thunderbird's SELECT: %q", sel)
	}
	// A FETCH that does not ask for MODSEQ gets none, CONDSTORE or not
	// (RFC 7162 section 3.1; Dovecot answers the same).
	first := fetchUIDs(tb.ok("UID fetch 1:* (FLAGS)"))
	if len(first) != 4 || !strings.Contains(first[1], "FLAGS (") || strings.Contains(first[1], "MODSEQ") {
		t.Fatalf("first flag sync: %v", first)
	}

	// Another device, on n1, flags one message and reads another.
	desk, err := imapclient.DialTLS(ic.n1.Addr(ListenIMAPS).String(), &imapclient.Options{TLSConfig: clientTLS(t, ic.cfg1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { desk.Close() })
	if err := desk.Login(ic.user, ic.password).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := desk.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	for uid, flag := range map[imap.UID]imap.Flag{1: imap.FlagFlagged, 2: imap.FlagSeen} {
		if err := desk.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{flag}, Silent: true}, nil).Close(); err != nil {
			t.Fatal(err)
		}
	}

	// Thunderbird's resync: only what changed since its HIGHESTMODSEQ.
	deadline := time.Now().Add(30 * time.Second)
	for {
		changed := fetchUIDs(tb.ok(fmt.Sprintf("UID fetch 1:* (FLAGS) (CHANGEDSINCE %d)", tbModSeq)))
		if strings.Contains(changed[1], `\Flagged`) && strings.Contains(changed[2], `\Seen`) {
			if len(changed) != 2 {
				t.Errorf("CHANGEDSINCE answered more than the changes: %v", changed)
			}
			if !strings.Contains(changed[1], "MODSEQ (") {
				t.Errorf("CHANGEDSINCE's answers lack MODSEQ: %v", changed)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other node's flag changes never reached Thunderbird: %v", changed)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// IDLE until new mail arrives (delivered through n1).
	tb.tag++
	idleTag := "Q" + strconv.Itoa(tb.tag)
	tb.send(idleTag + " IDLE")
	if l := tb.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	deliver("m5")
	for l := tb.line(); l != "* 5 EXISTS"; l = tb.line() {
		if strings.HasPrefix(l, idleTag+" ") {
			t.Fatalf("IDLE ended: %q", l)
		}
	}
	tb.send("DONE")
	for l := tb.line(); !strings.HasPrefix(l, idleTag+" "); l = tb.line() {
	}
	hdr := strings.Join(tb.ok("UID fetch 5 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])"), "\n")
	if !strings.Contains(hdr, "Subject: m5") || !strings.Contains(hdr, "UID 5") {
		t.Errorf("new message's headers: %q", hdr)
	}

	// Read it, move one to Trash, delete and expunge another.
	if got := fetchUIDs(tb.ok(`UID store 5 +FLAGS (\Seen)`)); !strings.Contains(got[5], `\Seen`) || !strings.Contains(got[5], "MODSEQ (") {
		t.Errorf("STORE \\Seen: %v", got)
	}
	moved := tb.ok(`UID move 3 "Trash"`)
	if !slices.ContainsFunc(moved, func(l string) bool { return strings.Contains(l, "[COPYUID ") }) || !slices.Contains(moved, "* 3 EXPUNGE") {
		t.Errorf("MOVE: %q", moved)
	}
	tb.ok(`UID store 4 +FLAGS.SILENT (\Deleted)`)
	if got := tb.ok("expunge"); !slices.Equal(got, []string{"* 3 EXPUNGE"}) {
		t.Errorf("EXPUNGE: %v", got)
	}

	// The other device sees Trash and INBOX as Thunderbird left them.
	deadline = time.Now().Add(30 * time.Second)
	for {
		trash, err := desk.Status("Trash", &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil {
			t.Fatal(err)
		}
		inbox, err := desk.Status("INBOX", &imap.StatusOptions{NumMessages: true, NumUnseen: true}).Wait()
		if err != nil {
			t.Fatal(err)
		}
		if *trash.NumMessages == 1 && *inbox.NumMessages == 3 && *inbox.NumUnseen == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n1 sees Trash %d, INBOX %d (%d unseen)", *trash.NumMessages, *inbox.NumMessages, *inbox.NumUnseen)
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.ok("logout")

	// The phone comes back on n1: the two messages gone, the two flag
	// changes of the other device, the new mail above what it knew.
	phone = ic.loginLines(t, ic.n1, ic.cfg1)
	phone.ok("ENABLE QRESYNC")
	lines := phone.ok(fmt.Sprintf("SELECT INBOX (QRESYNC (%d %d 1:4))", uv, phoneModSeq))
	var vanished []string
	for _, l := range lines {
		if strings.HasPrefix(l, "* VANISHED") {
			vanished = append(vanished, l)
		}
	}
	changed := fetchUIDs(lines)
	if !slices.Equal(vanished, []string{"* VANISHED (EARLIER) 3:4"}) || len(changed) != 2 ||
		!strings.Contains(changed[1], `\Flagged`) || !strings.Contains(changed[2], `\Seen`) || !slices.Contains(lines, "* 3 EXISTS") {
		t.Fatalf("QRESYNC after the changes: %q", lines)
	}
	newModSeq := codeNumber(t, lines, "HIGHESTMODSEQ")
	if newModSeq <= phoneModSeq {
		t.Errorf("HIGHESTMODSEQ %d, was %d", newModSeq, phoneModSeq)
	}
	if got := fetchUIDs(phone.ok("UID FETCH 5:* (FLAGS)")); len(got) != 1 || !strings.Contains(got[5], `\Seen`) {
		t.Errorf("new mail on the phone: %v", got)
	}
	phone.ok("LOGOUT")
	// Nothing changed since: the next resync is empty.
	phone = ic.loginLines(t, ic.n1, ic.cfg1)
	phone.ok("ENABLE QRESYNC")
	lines = phone.ok(fmt.Sprintf("SELECT INBOX (QRESYNC (%d %d))", uv, newModSeq))
	for _, l := range lines {
		if strings.HasPrefix(l, "* VANISHED") || strings.Contains(l, " FETCH ") {
			t.Errorf("resync with nothing changed: %q", lines)
			break
		}
	}
}
