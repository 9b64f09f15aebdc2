package imap

import (
	"bufio"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
)

// TestBaseSubject: RFC 5256 section 2.1's extraction.
func TestBaseSubject(t *testing.T) {
	for in, want := range map[string]string{
		"Hello":                              "Hello",
		"Re: Hello":                          "Hello",
		"RE:   Re: re:Hello  ":               "Hello",
		"Fwd: Hello (fwd)":                   "Hello",
		"Hello (fwd) (FWD)":                  "Hello",
		"Fw: [list] Re: Hello":               "Hello",
		"[list] Re: Hello":                   "Hello",
		"Re[2]: Hello":                       "Hello",
		"[fwd: Re: Hello]":                   "Hello",
		"[Fwd: [list] Hello (fwd)]":          "Hello",
		"[only a blob]":                      "[only a blob]",
		"Re:":                                "",
		"":                                   "",
		"Reply to this":                      "Reply to this",
		"Fwd:\tHello\r\n world":              "Hello world",
		"Re: [PATCH 2/3] Re: Fw: subject":    "subject",
		"[a][b] Re: [c] Fwd: [d] what (fwd)": "what",
	} {
		if got := baseSubject(in); got != want {
			t.Errorf("baseSubject(%q) = %q, want %q", in, got, want)
		}
	}
}

// readCommand tokenizes one command line as the front does.
func readCommand(t testing.TB, line string) (*imapwire.Command, error) {
	t.Helper()
	rd := imapwire.NewReader(bufio.NewReader(strings.NewReader(line+"\r\n")), imapwire.Limits{})
	rd.Continue = func() error { return nil }
	return rd.ReadCommand()
}

// TestParseSearchKeys: the front's search keys compile to the criteria
// the library would build, and malformed ones are syntax errors.
func TestParseSearchKeys(t *testing.T) {
	d := func(s string) time.Time { t, _ := time.Parse("2-Jan-2006", s); return t }
	for line, want := range map[string]imap.SearchCriteria{
		"a SORT (DATE) UTF-8 ALL":                             {},
		"a SORT (DATE) UTF-8 FROM alice SUBJECT {5}\r\nhello": {Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "alice"}, {Key: "Subject", Value: "hello"}}},
		`a SORT (DATE) UTF-8 (UNSEEN NEW) OR LARGER 10 HEADER "X-A" "b"`: {
			NotFlag: []imap.Flag{imap.FlagSeen, imap.FlagSeen}, Flag: []imap.Flag{flagRecent},
			Or: [][2]imap.SearchCriteria{{{Larger: 10}, {Header: []imap.SearchCriteriaHeaderField{{Key: "X-A", Value: "b"}}}}},
		},
		"a SORT (DATE) UTF-8 1:3,5 UID 7:* ON 1-Feb-1994 NOT KEYWORD $Junk": {
			SeqNum: []imap.SeqSet{{{Start: 1, Stop: 3}, {Start: 5, Stop: 5}}},
			UID:    []imap.UIDSet{{{Start: 7, Stop: 0}}},
			Since:  d("1-Feb-1994"), Before: d("2-Feb-1994"),
			Not: []imap.SearchCriteria{{Flag: []imap.Flag{"$Junk"}}},
		},
	} {
		cmd, err := readCommand(t, line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		sc, err := parseSort(cmd)
		if err != nil {
			t.Errorf("%q: %v", line, err)
			continue
		}
		if !reflect.DeepEqual(*sc.criteria, want) {
			t.Errorf("%q:\n got %+v\nwant %+v", line, *sc.criteria, want)
		}
	}
	for _, line := range []string{
		"a SORT", "a SORT (DATE)", "a SORT (DATE) UTF-8", "a SORT () UTF-8 ALL", "a SORT (REVERSE) UTF-8 ALL",
		"a SORT (BOGUS) UTF-8 ALL", "a SORT (DATE) UTF-8 BOGUS", "a SORT (DATE) UTF-8 FROM", "a SORT (DATE) UTF-8 ()",
		"a SORT (DATE) UTF-8 (ALL", "a SORT (DATE) UTF-8 ON 32-Feb-1994", "a SORT (DATE) UTF-8 LARGER x",
		"a SORT (DATE) UTF-8 0:3", "a SORT (DATE) UTF-8 OR ALL", "a SORT RETURN (BOGUS) (DATE) UTF-8 ALL",
		"a SORT (DATE) UTF-8 " + strings.Repeat("NOT ", maxSearchNesting+1) + "ALL",
	} {
		cmd, err := readCommand(t, line)
		if err != nil {
			continue // the reader refused it already
		}
		if _, err := parseSort(cmd); err == nil || !isSearchSyntax(err) {
			t.Errorf("%q: %v, want a syntax error", line, err)
		}
	}
}

// FuzzParseSort: any command line either parses or is a syntax error,
// never a panic.
func FuzzParseSort(f *testing.F) {
	for _, s := range []string{
		"(DATE) UTF-8 ALL", "RETURN (MIN MAX) (REVERSE SUBJECT) UTF-8 OR (FROM a TO b) NOT 1:*",
		"(ARRIVAL) US-ASCII UID $ SENTON 1-Jan-2000 HEADER x y", "(SIZE) UTF-8 ((((ALL))))",
		"RETURN (COUNT PARTIAL -1:-10) (DATE) UTF-8 ALL",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, args string) {
		cmd, err := readCommand(t, "a UID SORT "+args)
		if err != nil || cmd.Name != "UID SORT" {
			return
		}
		if _, err := parseSort(cmd); err != nil && !isSearchSyntax(err) {
			t.Fatalf("%q: %v", args, err)
		}
	})
}

// sortFixture delivers four messages whose sort keys all differ in
// order. Message 3's Date is later than message 1's only in UTC.
func sortFixture(t *testing.T, ts *testServer) {
	t.Helper()
	msgs := []string{
		// 1
		"From: Zed <zed@example.net>\r\nTo: bob@example.org\r\nCc: carl@example.org\r\nSubject: Re: banana\r\nDate: Wed, 3 Jan 2024 10:00:00 +0000\r\n\r\nshort\r\n",
		// 2
		"From: \"Anna\" <yolanda@example.net>\r\nTo: Xavier <amy@example.org>\r\nSubject: [list] apple\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n" + strings.Repeat("a much longer body\r\n", 20),
		// 3
		"From: mike@example.net\r\nTo: zoe@example.org\r\nCc: abe@example.org\r\nSubject: Fwd: cherry (fwd)\r\nDate: Wed, 3 Jan 2024 08:00:00 -0500\r\n\r\n" + strings.Repeat("medium\r\n", 5),
		// 4: no Date (sorts by arrival, the latest), same subject as 2.
		"From: bert@example.net\r\nTo: Moe <moe@example.org>\r\nSubject: =?UTF-8?Q?Re=3A_apple?=\r\n\r\nbody\r\n",
	}
	for _, m := range msgs {
		ts.deliver(t, m)
	}
}

// TestSortRaw: every sort key, REVERSE, several keys, search keys,
// ESORT's RETURN options, UID SORT, and the refusals, on the wire.
func TestSortRaw(t *testing.T) {
	ts := newTestServer(t)
	sortFixture(t, ts)
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	caps := strings.Join(rc.mustOK("CAPABILITY"), " ")
	for _, c := range []string{" SORT", " SORT=DISPLAY", " ESORT"} {
		if !strings.Contains(caps, c+" ") && !strings.HasSuffix(caps, c) {
			t.Errorf("%s not advertised: %q", c, caps)
		}
	}
	if _, st := rc.cmd("SORT (DATE) UTF-8 ALL"); !strings.HasPrefix(st, "BAD") {
		t.Errorf("SORT before SELECT: %q", st)
	}
	rc.mustOK("SELECT INBOX")
	for _, tc := range []struct{ cmd, want string }{
		{"SORT (SUBJECT) UTF-8 ALL", "* SORT 2 4 1 3"},
		{"SORT (REVERSE SUBJECT) UTF-8 ALL", "* SORT 3 1 2 4"},
		{"SORT (DATE) UTF-8 ALL", "* SORT 2 1 3 4"},
		{"SORT (REVERSE DATE) UTF-8 ALL", "* SORT 4 3 1 2"},
		{"SORT (ARRIVAL) UTF-8 ALL", "* SORT 1 2 3 4"},
		{"SORT (REVERSE ARRIVAL) US-ASCII ALL", "* SORT 4 3 2 1"},
		{"SORT (SIZE) UTF-8 ALL", "* SORT 4 1 3 2"},
		{"SORT (FROM) UTF-8 ALL", "* SORT 4 3 2 1"},
		{"SORT (DISPLAYFROM) UTF-8 ALL", "* SORT 2 4 3 1"},
		{"SORT (TO) UTF-8 ALL", "* SORT 2 1 4 3"},
		{"SORT (DISPLAYTO) UTF-8 ALL", "* SORT 1 4 2 3"},
		{"SORT (CC) UTF-8 ALL", "* SORT 2 4 3 1"},
		{"SORT (SUBJECT REVERSE ARRIVAL) UTF-8 ALL", "* SORT 4 2 1 3"},
		{"SORT (SUBJECT) UTF-8 NOT FROM bert", "* SORT 2 1 3"},
		{"SORT (SUBJECT) UTF-8 OR FROM zed FROM anna", "* SORT 2 1"},
		{"SORT (DATE) UTF-8 2:3", "* SORT 2 3"},
		{"SORT (DATE) UTF-8 SUBJECT nothing-matches", "* SORT"},
		{"SORT RETURN (MIN MAX COUNT) (DATE) UTF-8 ALL", `* ESEARCH (TAG "T%d") MIN 2 MAX 4 COUNT 4`},
		{"SORT RETURN () (REVERSE ARRIVAL) UTF-8 ALL", `* ESEARCH (TAG "T%d") ALL 4,3,2,1`},
		{"SORT RETURN (ALL) (ARRIVAL) UTF-8 ALL", `* ESEARCH (TAG "T%d") ALL 1:4`},
		{"SORT RETURN (COUNT) (ARRIVAL) UTF-8 SUBJECT none", `* ESEARCH (TAG "T%d") COUNT 0`},
	} {
		untagged, st := rc.cmd(tc.cmd)
		want := tc.want
		if strings.Contains(want, "%d") {
			want = strings.Replace(want, "%d", strconv.Itoa(rc.tag), 1)
		}
		if !strings.HasPrefix(st, "OK") || len(untagged) != 1 || untagged[0] != want {
			t.Errorf("%s: %q %q, want %q", tc.cmd, untagged, st, want)
		}
	}
	// UID SORT answers UIDs: expunge message 1 so that they differ.
	rc.mustOK("STORE 1 +FLAGS (\\Deleted)")
	rc.mustOK("EXPUNGE")
	untagged, st := rc.cmd("UID SORT (SUBJECT) UTF-8 ALL")
	if !strings.HasPrefix(st, "OK") || len(untagged) != 1 || untagged[0] != "* SORT 2 4 3" {
		t.Errorf("UID SORT: %q %q", untagged, st)
	}
	untagged, st = rc.cmd("UID SORT RETURN (MIN MAX) (SUBJECT) UTF-8 ALL")
	if !strings.HasPrefix(st, "OK") || len(untagged) != 1 || untagged[0] != `* ESEARCH (TAG "T`+strconv.Itoa(rc.tag)+`") UID MIN 2 MAX 3` {
		t.Errorf("UID SORT RETURN: %q %q", untagged, st)
	}
	for cmd, want := range map[string]string{
		"SORT (DATE) KOI8-R ALL":      "NO [BADCHARSET (UTF-8 US-ASCII)]",
		"SORT (BOGUS) UTF-8 ALL":      "BAD",
		"SORT (DATE) UTF-8 BOGUS":     "BAD",
		"SORT (DATE) UTF-8 5":         "OK", // beyond the mailbox: matches nothing
		"UID SORT (DATE) UTF-8 UID $": "OK",
	} {
		if _, st := rc.cmd(cmd); !strings.HasPrefix(st, want) {
			t.Errorf("%s: %q, want %s", cmd, st, want)
		}
	}
	rc.stillInSync()
}

// TestSortClient: go-imap's client encodes its search criteria and sort
// keys, and reads the answer.
func TestSortClient(t *testing.T) {
	ts := newTestServer(t)
	sortFixture(t, ts)
	c := ts.login(t, nil)
	selectMailbox(t, c, "INBOX", false)
	for _, tc := range []struct {
		opts imapclient.SortOptions
		want []uint32
	}{
		{imapclient.SortOptions{SearchCriteria: &imap.SearchCriteria{}, SortCriteria: []imapclient.SortCriterion{{Key: imapclient.SortKeySubject}}}, []uint32{2, 4, 1, 3}},
		{imapclient.SortOptions{
			SearchCriteria: &imap.SearchCriteria{Since: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), Not: []imap.SearchCriteria{{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "ZED"}}}}},
			SortCriteria:   []imapclient.SortCriterion{{Key: imapclient.SortKeyDate, Reverse: true}},
		}, []uint32{4, 3, 2}},
		{imapclient.SortOptions{
			SearchCriteria: &imap.SearchCriteria{SeqNum: []imap.SeqSet{{{Start: 2, Stop: 0}}}, Larger: 10},
			SortCriteria:   []imapclient.SortCriterion{{Key: imapclient.SortKeySize}, {Key: imapclient.SortKeyArrival}},
		}, []uint32{4, 3, 2}},
	} {
		got, err := c.Sort(&tc.opts).Wait()
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SORT %+v: %v %v, want %v", tc.opts.SortCriteria, got, err, tc.want)
		}
	}
	got, err := c.UIDSort(&imapclient.SortOptions{SearchCriteria: &imap.SearchCriteria{}, SortCriteria: []imapclient.SortCriterion{{Key: imapclient.SortKeyFrom}}}).Wait()
	if err != nil || !reflect.DeepEqual(got, []uint32{4, 3, 2, 1}) {
		t.Errorf("UID SORT (FROM): %v %v", got, err)
	}
}

// TestSortSeesAnnouncedMessages: a message delivered after SELECT is
// not in SORT's answer until the session has announced it (EXISTS), so
// the sequence numbers SORT answers are always the client's.
func TestSortSeesAnnouncedMessages(t *testing.T) {
	ts := newTestServer(t)
	sortFixture(t, ts)
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("SELECT INBOX")
	ts.deliver(t, simpleMessage("a@example.net", testUser, "a new one", "Mon, 1 Jan 2024 00:00:00 +0000", "x"))
	if untagged := rc.mustOK("SORT (ARRIVAL) UTF-8 ALL"); len(untagged) != 1 || untagged[0] != "* SORT 1 2 3 4" {
		t.Errorf("SORT before EXISTS: %q", untagged)
	}
	waitFor(t, "EXISTS 5", func() bool {
		return strings.Contains(strings.Join(rc.mustOK("NOOP"), "\n"), "* 5 EXISTS")
	})
	if untagged := rc.mustOK("SORT (ARRIVAL) UTF-8 ALL"); len(untagged) != 1 || untagged[0] != "* SORT 1 2 3 4 5" {
		t.Errorf("SORT after EXISTS: %q", untagged)
	}
}

// TestSortCasemapAndGroups: SORT compares with i;ascii-casemap (RFC 5256
// section 2.1), which upper-cases letters, so "[" and "_" sort after
// them; and FROM, TO and CC take the first ENVELOPE address, a group's
// start marker (its name) when the field starts with a group (RFC 5256
// section 3). imaptest's sort-subject and sort-addresses found both.
func TestSortCasemapAndGroups(t *testing.T) {
	ts := newTestServer(t)
	for _, m := range []string{
		"From: zed@example.net\r\nTo: team: amy@example.org;\r\nCc: bob@example.org\r\nSubject: _\r\n\r\n1\r\n",
		"From: Mike <mike@example.net>\r\nTo: carl@example.org\r\nCc: anna: zoe@example.org;\r\nSubject: [xyz]\r\n\r\n2\r\n",
		"From: bert@example.net\r\nTo: Xavier <xavier@example.org>\r\nCc: abe@example.org\r\nSubject: Re: B\r\n\r\n3\r\n",
		// No domain: sorted by its mailbox, not as an empty key.
		"From: mary\r\nTo: \r\nSubject: d\r\n\r\n4\r\n",
	} {
		ts.deliver(t, m)
	}
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("SELECT INBOX")
	for cmd, want := range map[string]string{
		"SORT (SUBJECT) UTF-8 ALL":         "* SORT 3 4 2 1",
		"SORT (REVERSE SUBJECT) UTF-8 ALL": "* SORT 1 2 4 3",
		"SORT (FROM) UTF-8 ALL":            "* SORT 3 4 2 1",
		"SORT (TO) UTF-8 ALL":              "* SORT 4 2 1 3",
		"SORT (CC) UTF-8 ALL":              "* SORT 4 3 2 1",
		"SORT (DISPLAYTO) UTF-8 ALL":       "* SORT 4 2 1 3",
		"SORT (DISPLAYFROM) UTF-8 ALL":     "* SORT 3 4 2 1",
	} {
		untagged, st := rc.cmd(cmd)
		if !strings.HasPrefix(st, "OK") || len(untagged) != 1 || untagged[0] != want {
			t.Errorf("%s: %q %q, want %q", cmd, untagged, st, want)
		}
	}
}

func TestASCIICasemap(t *testing.T) {
	for in, want := range map[string]string{"": "", "abc": "ABC", "A_b[": "A_B[", "ÿé": "ÿé", "x-ÿ": "X-ÿ"} {
		if got := asciiCasemap(in); got != want {
			t.Errorf("asciiCasemap(%q) = %q, want %q", in, got, want)
		}
	}
}
