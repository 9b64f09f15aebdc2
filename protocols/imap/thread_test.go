package imap

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// tmsg builds a threadMsg: sequence number seq, dated seq hours after
// a base unless hours says otherwise, with its subject's base and
// reply flag worked out as the server does.
func tmsg(seq uint32, id, refs, subject string) *threadMsg {
	base := baseSubject(subject)
	return &threadMsg{
		num: seq, seq: seq,
		date:    time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Hour),
		subject: asciiCasemap(base), reply: base != stripSubjBlobs(subject),
		msgID: id, refs: parseMsgIDs(refs, maxThreadRefs),
	}
}

// threadString is the answer's thread-list for the roots.
func threadString(roots []*threadNode) string {
	var b strings.Builder
	writeThreads(&b, roots)
	return b.String()
}

// threadNums returns every number in a thread-list, sorted, and fails
// on anything but digits, spaces and parentheses.
func threadNums(t testing.TB, s string) []int {
	t.Helper()
	var nums []int
	depth := 0
	for _, f := range strings.FieldsFunc(s, func(r rune) bool {
		switch r {
		case '(':
			depth++
			return true
		case ')':
			depth--
			if depth < 0 {
				t.Fatalf("unbalanced %q", s)
			}
			return true
		}
		return r == ' '
	}) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("%q in %q", f, s)
		}
		nums = append(nums, n)
	}
	if depth != 0 {
		t.Fatalf("unbalanced %q", s)
	}
	sort.Ints(nums)
	return nums
}

// TestThreadReferences: REFERENCES on hand-built mailboxes: chains,
// branches, missing parents (dummies kept at the root and pruned below
// it), loops in References and between messages, In-Reply-To, duplicate
// Message-IDs, and the grouping of roots by base subject.
func TestThreadReferences(t *testing.T) {
	for _, tc := range []struct {
		name string
		msgs []*threadMsg
		want string
	}{
		{"chain and branch", []*threadMsg{
			tmsg(1, "a@x", "", "topic"),
			tmsg(2, "b@x", "<a@x>", "Re: topic"),
			tmsg(3, "c@x", "<a@x> <b@x>", "Re: topic"),
			tmsg(4, "d@x", "<a@x>", "Re: topic"),
			tmsg(5, "e@x", "", "other"),
		}, "(1 (2 3)(4))(5)"},
		{"siblings by date, not arrival", []*threadMsg{
			tmsg(3, "c@x", "<a@x>", "Re: t"),
			tmsg(1, "a@x", "", "t"),
			tmsg(2, "b@x", "<a@x>", "Re: t"),
		}, "(1 (2)(3))"},
		{"missing parent, two children: dummy root", []*threadMsg{
			tmsg(1, "b@x", "<gone@x>", "Re: lost"),
			tmsg(2, "c@x", "<gone@x>", "Re: lost"),
		}, "((1)(2))"},
		{"missing parent, one child: promoted", []*threadMsg{
			tmsg(1, "b@x", "<gone@x>", "Re: lost"),
		}, "(1)"},
		{"missing middle: children promoted", []*threadMsg{
			tmsg(1, "a@x", "", "m"),
			tmsg(2, "c@x", "<a@x> <gone@x>", "Re: m"),
			tmsg(3, "d@x", "<a@x> <gone@x>", "Re: m"),
		}, "(1 (2)(3))"},
		{"self reference", []*threadMsg{
			tmsg(1, "a@x", "<a@x>", "s"),
		}, "(1)"},
		{"loop between messages", []*threadMsg{
			tmsg(1, "a@x", "<b@x>", "p"),
			tmsg(2, "b@x", "<a@x>", "q"),
		}, "(2 1)"},
		{"own References drop the parent, new link would loop", []*threadMsg{
			// imaptest's thread test: 2 makes c the parent of b and a
			// the parent of c; 3 (c) names b, its child, as parent: c
			// leaves a and, the link looping, stays a root.
			tmsg(1, "a@x", "", "t1"),
			tmsg(2, "b@x", "<a@x> <c@x>", "t2"),
			tmsg(3, "c@x", "<b@x>", "t3"),
		}, "(1)(3 2)"},
		{"own References move the message", []*threadMsg{
			tmsg(1, "a@x", "", "u"),
			tmsg(2, "b@x", "<a@x> <c@x>", "v"),
			tmsg(3, "c@x", "<d@x>", "w"),
			tmsg(4, "d@x", "", "x"),
		}, "(1)(4 3 2)"},
		{"loop inside References", []*threadMsg{
			tmsg(1, "c@x", "<a@x> <b@x> <a@x>", "r"),
		}, "(1)"},
		{"In-Reply-To only", []*threadMsg{
			tmsg(1, "a@x", "", "i"),
			{num: 2, seq: 2, date: time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC), subject: "unrelated", msgID: "b@x", refs: []string{"a@x"}},
		}, "(1 2)"},
		{"duplicate Message-ID", []*threadMsg{
			tmsg(1, "a@x", "", "dup"),
			tmsg(2, "a@x", "", "dup two"),
		}, "(1)(2)"},
		{"same subject: reply under the original", []*threadMsg{
			tmsg(1, "", "", "Re: news"),
			tmsg(2, "", "", "news"),
		}, "(2 1)"},
		{"same subject, neither a reply: dummy", []*threadMsg{
			tmsg(1, "", "", "news"),
			tmsg(2, "", "", "[list] news"),
			tmsg(3, "", "", "news"),
		}, "((1)(2)(3))"},
		{"no messages", nil, ""},
	} {
		if got := threadString(references(tc.msgs)); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestThreadOrderedSubject: grouping by base subject, dates within and
// across threads.
func TestThreadOrderedSubject(t *testing.T) {
	msgs := []*threadMsg{
		tmsg(1, "", "", "beta"),
		tmsg(2, "", "", "Re: alpha"),
		tmsg(3, "", "", "alpha"),
		tmsg(4, "", "", "Fwd: beta (fwd)"),
		tmsg(5, "", "", "gamma"),
		tmsg(6, "", "", "Re: alpha"),
	}
	msgs[2].date = msgs[0].date.Add(-time.Hour) // 3 is the oldest
	if got, want := threadString(orderedSubject(msgs)), "(3 (2)(6))(1 4)(5)"; got != want {
		t.Errorf("ORDEREDSUBJECT: %q, want %q", got, want)
	}
}

// TestThreadHostile: huge References lists are cut to maxThreadRefs,
// a chain far deeper than maxThreadDepth and cross-linked loops still
// thread every message exactly once, without recursion.
func TestThreadHostile(t *testing.T) {
	var long strings.Builder
	for i := 0; i < 100000; i++ {
		fmt.Fprintf(&long, "<r%d@x> ", i)
	}
	ids := parseMsgIDs(long.String(), maxThreadRefs)
	if len(ids) != maxThreadRefs || ids[len(ids)-1] != "r99999@x" {
		t.Fatalf("parseMsgIDs kept %d, last %q", len(ids), ids[len(ids)-1])
	}
	if ids := parseMsgIDs("<"+strings.Repeat("a", maxMsgIDLen+1)+"> <ok@x>", 10); !reflect.DeepEqual(ids, []string{"ok@x"}) {
		t.Errorf("over-long ID kept: %d IDs", len(ids))
	}
	const n = 3000
	var msgs []*threadMsg
	for i := 1; i <= n; i++ {
		var refs strings.Builder
		for j := max(1, i-40); j < i; j++ {
			fmt.Fprintf(&refs, "<m%d@x> ", j)
		}
		if i%7 == 0 {
			fmt.Fprintf(&refs, "<m%d@x>", i+5) // forward: a loop later
		}
		msgs = append(msgs, tmsg(uint32(i), fmt.Sprintf("m%d@x", i), refs.String(), "Re: deep"))
	}
	for _, algo := range []func([]*threadMsg) []*threadNode{references, orderedSubject} {
		nums := threadNums(t, threadString(algo(msgs)))
		if len(nums) != n {
			t.Fatalf("%d numbers, want %d", len(nums), n)
		}
		for i, v := range nums {
			if v != i+1 {
				t.Fatalf("number %d is %d", i, v)
			}
		}
	}
}

// FuzzParseMsgIDs: the References parser keeps at most its bound of
// IDs, each non-empty, bounded and free of brackets and white space.
func FuzzParseMsgIDs(f *testing.F) {
	for _, s := range []string{"<a@b> <c@d>", "<<a@b>", "<a\r\n @b>", "<>", "x <y> z", "<" + strings.Repeat("<a>", 50)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids := parseMsgIDs(s, 4)
		if len(ids) > 4 {
			t.Fatalf("%d IDs", len(ids))
		}
		for _, id := range ids {
			if id == "" || len(id) > maxMsgIDLen || strings.ContainsAny(id, "<> \t\r\n") {
				t.Fatalf("ID %q", id)
			}
		}
	})
}

// FuzzThreadReferences: any References graph threads every message
// exactly once into a well-formed thread-list.
func FuzzThreadReferences(f *testing.F) {
	f.Add([]byte{0, 1, 2, 1, 0, 2, 3, 3, 1})
	f.Add([]byte{5, 5, 5, 4, 3, 2, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 300 {
			return
		}
		var msgs []*threadMsg
		for i := 0; i+2 < len(b); i += 3 {
			seq := uint32(len(msgs) + 1)
			refs := fmt.Sprintf("<%d> <%d>", b[i+1]%16, b[i+2]%16)
			subj := []string{"a", "Re: a", "b", ""}[b[i]%4]
			m := tmsg(seq, strconv.Itoa(int(b[i]%16)), refs, subj)
			m.date = m.date.Add(time.Duration(b[i+2]%3) * -24 * time.Hour)
			msgs = append(msgs, m)
		}
		nums := threadNums(t, threadString(references(msgs)))
		if len(nums) != len(msgs) {
			t.Fatalf("%d numbers for %d messages", len(nums), len(msgs))
		}
		for i, v := range nums {
			if v != i+1 {
				t.Fatalf("numbers %v", nums)
			}
		}
	})
}

// threadFixture: a thread of three with a missing-parent pair, and an
// unrelated message.
func threadFixture(t *testing.T, ts *testServer) {
	t.Helper()
	for _, m := range []string{
		"From: a@example.net\r\nSubject: plan\r\nMessage-ID: <1@x>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nx\r\n",
		"From: b@example.net\r\nSubject: Re: plan\r\nMessage-ID: <2@x>\r\nIn-Reply-To: <1@x>\r\nDate: Mon, 1 Jan 2024 11:00:00 +0000\r\n\r\nx\r\n",
		"From: c@example.net\r\nSubject: other\r\nMessage-ID: <3@x>\r\nDate: Mon, 1 Jan 2024 09:00:00 +0000\r\n\r\nx\r\n",
		"From: d@example.net\r\nSubject: Re: plan\r\nMessage-ID: <4@x>\r\nReferences: <1@x>\r\n <2@x>\r\nDate: Mon, 1 Jan 2024 12:00:00 +0000\r\n\r\nx\r\n",
		"From: e@example.net\r\nSubject: Re: plan\r\nMessage-ID: <5@x>\r\nReferences: <1@x>\r\nDate: Mon, 1 Jan 2024 13:00:00 +0000\r\n\r\nx\r\n",
	} {
		ts.deliver(t, m)
	}
}

// TestThreadRaw: THREAD and UID THREAD on the wire: capabilities, both
// algorithms, search keys, UIDs after EXPUNGE, and the refusals.
func TestThreadRaw(t *testing.T) {
	ts := newTestServer(t)
	threadFixture(t, ts)
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	caps := " " + strings.Join(rc.mustOK("CAPABILITY"), " ") + " "
	for _, c := range []string{" THREAD=ORDEREDSUBJECT ", " THREAD=REFERENCES "} {
		if !strings.Contains(caps, c) {
			t.Errorf("%s not advertised: %q", c, caps)
		}
	}
	if _, st := rc.cmd("THREAD REFERENCES UTF-8 ALL"); !strings.HasPrefix(st, "BAD") {
		t.Errorf("THREAD before SELECT: %q", st)
	}
	rc.mustOK("SELECT INBOX")
	for _, tc := range []struct{ cmd, want string }{
		{"THREAD REFERENCES UTF-8 ALL", "* THREAD (3)(1 (2 4)(5))"},
		{"THREAD ORDEREDSUBJECT UTF-8 ALL", "* THREAD (3)(1 (2)(4)(5))"},
		{"THREAD references us-ascii NOT FROM c", "* THREAD (1 (2 4)(5))"},
		{"THREAD REFERENCES UTF-8 4:5", "* THREAD ((4)(5))"},
		{"THREAD REFERENCES UTF-8 SUBJECT nothing", "* THREAD"},
	} {
		untagged, st := rc.cmd(tc.cmd)
		if !strings.HasPrefix(st, "OK") || len(untagged) != 1 || untagged[0] != tc.want {
			t.Errorf("%s: %q %q, want %q", tc.cmd, untagged, st, tc.want)
		}
	}
	rc.mustOK("STORE 1 +FLAGS (\\Deleted)")
	rc.mustOK("EXPUNGE")
	// 1 is gone: its replies lose their parent, and UIDs differ from
	// sequence numbers.
	for cmd, want := range map[string]string{
		"UID THREAD REFERENCES UTF-8 ALL":         "* THREAD (3)((2 4)(5))",
		"THREAD REFERENCES UTF-8 ALL":             "* THREAD (2)((1 3)(4))",
		"UID THREAD ORDEREDSUBJECT UTF-8 UID 4:5": "* THREAD (4 5)",
	} {
		untagged, st := rc.cmd(cmd)
		if !strings.HasPrefix(st, "OK") || len(untagged) != 1 || untagged[0] != want {
			t.Errorf("%s: %q %q, want %q", cmd, untagged, st, want)
		}
	}
	for cmd, want := range map[string]string{
		"THREAD REFERENCES KOI8-R ALL":  "NO [BADCHARSET (UTF-8 US-ASCII)]",
		"THREAD BOGUS UTF-8 ALL":        "BAD",
		"THREAD REFERENCES":             "BAD",
		"THREAD REFERENCES UTF-8 BOGUS": "BAD",
		"THREAD (REFERENCES) UTF-8 ALL": "BAD",
	} {
		if _, st := rc.cmd(cmd); !strings.HasPrefix(st, want) {
			t.Errorf("%s: %q, want %s", cmd, st, want)
		}
	}
	rc.stillInSync()
}

// TestThreadClient: go-imap's client sends THREAD and reads the answer.
func TestThreadClient(t *testing.T) {
	ts := newTestServer(t)
	threadFixture(t, ts)
	c := ts.login(t, nil)
	if algs := c.Caps().ThreadAlgorithms(); len(algs) != 2 {
		t.Errorf("thread algorithms %v", algs)
	}
	selectMailbox(t, c, "INBOX", false)
	got, err := c.Thread(&imapclient.ThreadOptions{Algorithm: imap.ThreadReferences, SearchCriteria: &imap.SearchCriteria{}}).Wait()
	want := []imapclient.ThreadData{{Chain: []uint32{3}}, {Chain: []uint32{1}, SubThreads: []imapclient.ThreadData{{Chain: []uint32{2, 4}}, {Chain: []uint32{5}}}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("THREAD REFERENCES ALL: %+v %v, want %+v", got, err, want)
	}
	crit := &imap.SearchCriteria{Not: []imap.SearchCriteria{{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "c@"}}}}}
	got, err = c.Thread(&imapclient.ThreadOptions{Algorithm: imap.ThreadReferences, SearchCriteria: crit}).Wait()
	want = []imapclient.ThreadData{{Chain: []uint32{1}, SubThreads: []imapclient.ThreadData{{Chain: []uint32{2, 4}}, {Chain: []uint32{5}}}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("THREAD REFERENCES: %+v %v, want %+v", got, err, want)
	}
	got, err = c.UIDThread(&imapclient.ThreadOptions{Algorithm: imap.ThreadOrderedSubject, SearchCriteria: crit}).Wait()
	want = []imapclient.ThreadData{{Chain: []uint32{1}, SubThreads: []imapclient.ThreadData{{Chain: []uint32{2}}, {Chain: []uint32{4}}, {Chain: []uint32{5}}}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("UID THREAD ORDEREDSUBJECT: %+v %v, want %+v", got, err, want)
	}
}
