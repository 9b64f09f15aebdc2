package imap

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// searchFixture appends four messages with known headers, bodies, flags
// and internal dates to INBOX and selects it.
func searchFixture(t *testing.T) (*testServer, *imapclient.Client) {
	t.Helper()
	ts := newTestServer(t)
	c := ts.login(t, nil)
	day := func(d int) time.Time { return time.Date(2023, 6, d, 12, 0, 0, 0, time.UTC) }
	msgs := []struct {
		body  string
		flags []imap.Flag
		date  time.Time
	}{
		{multipartMessage(), []imap.Flag{imap.FlagSeen}, day(1)},
		{"From: dave@example.net\r\nTo: alice@example.org\r\nCc: Eve <eve@example.org>\r\nSubject: Lunch?\r\n" +
			"Date: Thu, 15 Feb 2024 11:00:00 +0000\r\n\r\npizza at noon\r\n", []imap.Flag{imap.FlagSeen, imap.FlagFlagged}, day(2)},
		{"From: =?utf-8?q?=C3=89ric?= <eric@example.com>\r\nTo: team@example.org\r\nSubject: =?utf-8?q?Caf=C3=A9_meeting?=\r\n" +
			"Date: Wed, 20 Mar 2024 08:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString([]byte("let's meet at the café")) + "\r\n", nil, day(3)},
		{"From: Carol <carol@example.net>\r\nTo: alice@example.org\r\nBcc: hidden@example.org\r\nSubject: Re: Quarterly report\r\n" +
			"Date: Mon, 01 Apr 2024 17:00:00 +0000\r\nX-Priority: 1\r\n\r\nthanks\r\n", []imap.Flag{"$Todo", imap.FlagDeleted}, day(4)},
	}
	for i, m := range msgs {
		cmd := c.Append("INBOX", int64(len(m.body)), &imap.AppendOptions{Flags: m.flags, Time: m.date})
		if _, err := cmd.Write([]byte(m.body)); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := cmd.Wait(); err != nil {
			t.Fatalf("append %d: %v", i+1, err)
		}
	}
	selectMailbox(t, c, "INBOX", false)
	return ts, c
}

func date(s string) time.Time {
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestSearchCriteria(t *testing.T) {
	_, c := searchFixture(t)
	hdr := func(k, v string) []imap.SearchCriteriaHeaderField {
		return []imap.SearchCriteriaHeaderField{{Key: k, Value: v}}
	}
	cases := []struct {
		name     string
		criteria imap.SearchCriteria
		want     string
	}{
		{"all", imap.SearchCriteria{}, "[1 2 3 4]"},
		{"sequence set", imap.SearchCriteria{SeqNum: []imap.SeqSet{{{Start: 2, Stop: 3}}}}, "[2 3]"},
		{"sequence star", imap.SearchCriteria{SeqNum: []imap.SeqSet{{{Start: 0, Stop: 0}}}}, "[4]"},
		{"uid range", imap.SearchCriteria{UID: []imap.UIDSet{{{Start: 3, Stop: 0}}}}, "[3 4]"},
		{"seen", imap.SearchCriteria{Flag: []imap.Flag{imap.FlagSeen}}, "[1 2]"},
		{"unseen", imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, "[3 4]"},
		{"flagged", imap.SearchCriteria{Flag: []imap.Flag{imap.FlagFlagged}}, "[2]"},
		{"deleted", imap.SearchCriteria{Flag: []imap.Flag{imap.FlagDeleted}}, "[4]"},
		{"keyword", imap.SearchCriteria{Flag: []imap.Flag{"$todo"}}, "[4]"},
		{"unkeyword", imap.SearchCriteria{NotFlag: []imap.Flag{"$Todo"}}, "[1 2 3]"},
		// The session is the first to select the mailbox: all are recent.
		{"recent", imap.SearchCriteria{Flag: []imap.Flag{`\Recent`}}, "[1 2 3 4]"},
		{"new", imap.SearchCriteria{Flag: []imap.Flag{`\Recent`}, NotFlag: []imap.Flag{imap.FlagSeen}}, "[3 4]"},
		{"old", imap.SearchCriteria{NotFlag: []imap.Flag{`\Recent`}}, "[]"},
		{"from", imap.SearchCriteria{Header: hdr("From", "CAROL")}, "[1 4]"},
		{"from encoded name", imap.SearchCriteria{Header: hdr("From", "éric")}, "[3]"},
		{"to", imap.SearchCriteria{Header: hdr("To", "alice@")}, "[1 2 4]"},
		{"cc", imap.SearchCriteria{Header: hdr("Cc", "eve")}, "[2]"},
		{"bcc", imap.SearchCriteria{Header: hdr("Bcc", "hidden")}, "[4]"},
		{"subject", imap.SearchCriteria{Header: hdr("Subject", "quarterly")}, "[1 4]"},
		{"subject encoded", imap.SearchCriteria{Header: hdr("Subject", "café")}, "[3]"},
		{"header", imap.SearchCriteria{Header: hdr("X-Priority", "1")}, "[4]"},
		{"header present", imap.SearchCriteria{Header: hdr("x-priority", "")}, "[4]"},
		{"body", imap.SearchCriteria{Body: []string{"PIZZA"}}, "[2]"},
		{"body quoted-printable", imap.SearchCriteria{Body: []string{"here is the report"}}, "[1]"},
		{"body base64", imap.SearchCriteria{Body: []string{"café"}}, "[3]"},
		{"body not header", imap.SearchCriteria{Body: []string{"quarterly"}}, "[]"},
		{"text", imap.SearchCriteria{Text: []string{"quarterly"}}, "[1 4]"},
		{"before", imap.SearchCriteria{Before: date("2023-06-03")}, "[1 2]"},
		{"since", imap.SearchCriteria{Since: date("2023-06-03")}, "[3 4]"},
		{"on", imap.SearchCriteria{Since: date("2023-06-02"), Before: date("2023-06-03")}, "[2]"},
		{"sentbefore", imap.SearchCriteria{SentBefore: date("2024-03-01")}, "[1 2]"},
		{"sentsince", imap.SearchCriteria{SentSince: date("2024-03-20")}, "[3 4]"},
		{"senton", imap.SearchCriteria{SentSince: date("2024-02-15"), SentBefore: date("2024-02-16")}, "[2]"},
		{"larger", imap.SearchCriteria{Larger: 600}, "[1]"},
		{"smaller", imap.SearchCriteria{Smaller: 600}, "[2 3 4]"},
		{"not", imap.SearchCriteria{Not: []imap.SearchCriteria{{Header: hdr("From", "carol")}}}, "[2 3]"},
		{"or", imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{{Flag: []imap.Flag{imap.FlagFlagged}}, {Flag: []imap.Flag{imap.FlagDeleted}}}}}, "[2 4]"},
		{"and", imap.SearchCriteria{Header: hdr("From", "carol"), Flag: []imap.Flag{imap.FlagSeen}}, "[1]"},
		{"not or", imap.SearchCriteria{Not: []imap.SearchCriteria{{Or: [][2]imap.SearchCriteria{{
			{Flag: []imap.Flag{imap.FlagSeen}}, {Body: []string{"thanks"}},
		}}}}}, "[3]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, err := c.Search(&tc.criteria, nil).Wait()
			if err != nil {
				t.Fatalf("search: %v", err)
			}
			if got := fmt.Sprint(data.AllSeqNums()); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}

	t.Run("uid search", func(t *testing.T) {
		data, err := c.UIDSearch(&imap.SearchCriteria{Header: hdr("From", "carol")}, nil).Wait()
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(data.AllUIDs()); got != "[1 4]" {
			t.Errorf("UID SEARCH = %s", got)
		}
	})

	t.Run("esearch", func(t *testing.T) {
		data, err := c.Search(&imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagFlagged}},
			&imap.SearchOptions{ReturnMin: true, ReturnMax: true, ReturnCount: true}).Wait()
		if err != nil {
			t.Fatal(err)
		}
		if data.Min != 1 || data.Max != 4 || data.Count != 3 {
			t.Errorf("ESEARCH MIN %d MAX %d COUNT %d", data.Min, data.Max, data.Count)
		}
		data, err = c.Search(&imap.SearchCriteria{Flag: []imap.Flag{imap.FlagSeen}}, &imap.SearchOptions{ReturnAll: true}).Wait()
		if err != nil || fmt.Sprint(data.AllSeqNums()) != "[1 2]" {
			t.Errorf("ESEARCH ALL = %v %v", data, err)
		}
	})
}

func TestSearchRes(t *testing.T) {
	ts, _ := searchFixture(t)
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("SELECT INBOX")

	rc.mustOK("SEARCH RETURN (SAVE) FROM carol")
	fetched := rc.mustOK("FETCH $ (UID)")
	if len(fetched) != 2 || !strings.HasPrefix(fetched[0], "* 1 FETCH") || !strings.HasPrefix(fetched[1], "* 4 FETCH") {
		t.Errorf("FETCH $ = %q", fetched)
	}
	// $ combines with other criteria.
	res := rc.mustOK("UID SEARCH $ SEEN")
	if len(res) != 1 || res[0] != "* SEARCH 1" {
		t.Errorf("UID SEARCH $ SEEN = %q", res)
	}
	// SAVE with MIN alone saves only the minimum (RFC 5182 section 2.1).
	rc.mustOK("SEARCH RETURN (SAVE MIN) NOT SEEN")
	if fetched := rc.mustOK("FETCH $ (UID)"); len(fetched) != 1 || !strings.HasPrefix(fetched[0], "* 3 FETCH") {
		t.Errorf("FETCH $ after SAVE MIN = %q", fetched)
	}
	// STORE and COPY accept $ too.
	rc.mustOK("UID STORE $ +FLAGS.SILENT (\\Answered)")
	if res := rc.mustOK("SEARCH ANSWERED"); len(res) != 1 || res[0] != "* SEARCH 3" {
		t.Errorf("after STORE $: %q", res)
	}
	// A search with no match empties the saved result.
	rc.mustOK("SEARCH RETURN (SAVE) FROM nobody-at-all")
	if fetched := rc.mustOK("FETCH $ (UID)"); len(fetched) != 0 {
		t.Errorf("FETCH $ after empty SAVE = %q", fetched)
	}
}

func TestSearchLimits(t *testing.T) {
	ts, _ := searchFixture(t)
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("SELECT INBOX")
	_, status := rc.cmd("SEARCH " + strings.Repeat("SEEN ", 1200) + "ALL")
	if !strings.HasPrefix(status, "NO [LIMIT]") {
		t.Errorf("overlong search: %s", status)
	}
	// Huge or reversed ranges are fine and cheap.
	if res := rc.mustOK("SEARCH 4294967295:1 UID 1:4294967295"); len(res) != 1 || res[0] != "* SEARCH 1 2 3 4" {
		t.Errorf("full-range search = %q", res)
	}
	rc.mustOK("NOOP")
}

// TestSearchAddresses: FROM, TO, CC and BCC match the whole field value,
// display names and addresses included, case-insensitively, whatever
// comments, quoting, encoding or folding the field has, and in every
// field of that name (as Dovecot does).
func TestSearchAddresses(t *testing.T) {
	ts := newTestServer(t)
	for _, h := range []string{
		"From: user-from@domain.example\r\nTo: user-to@domain.example\r\nCc: user-cc@domain.example\r\nBcc: user-bcc@domain.example\r\n",
		"From: RealFrom <user-from@domain.example>\r\nTo: RealTo <user-to@domain.example>\r\nCc: RealCc <USER-CC@DOMAIN.EXAMPLE>\r\nBcc: RealBcc <user-bcc@domain.example>\r\n",
		"From: <user-from (comment)@ (comment) domain.example>\r\nTo: <user-to@domain.example>\r\n",
		"From: user-from@domain.example (RealFrom)\r\nTo: user-to@domain.example (RealTo)\r\n",
		"From: \"Smith, John\" <john@x.example>\r\nBcc: \"Hidden Person\" <hp@x.example>\r\n",
		"From: =?iso-8859-1?q?J=F6rg_M=FCller?= <jm@x.example>\r\nTo: =?utf-8?b?w4lyaWM=?= <eric@x.example>\r\n",
		"From: folder@x.example\r\nTo: first@a.example,\r\n\tsecond@b.example\r\n",
		"From: multi@x.example\r\nTo: one@a.example\r\nTo: two@b.example\r\n",
		"From: grouper@x.example\r\nTo: groupname: g1@d.example, g2@d.example;,\r\n  groupname2: g3@d.example;\r\n",
	} {
		ts.deliver(t, h+"Subject: s\r\n\r\nbody\r\n")
	}
	c := ts.login(t, nil)
	selectMailbox(t, c, "INBOX", true)
	cases := []struct{ key, value, want string }{
		{"From", "user-from@domain.example", "[1 2 3 4]"},
		{"To", "user-to@domain.example", "[1 2 3 4]"},
		{"Cc", "user-cc@domain.example", "[1 2]"},
		{"Bcc", "user-bcc@domain.example", "[1 2]"},
		{"From", "realfrom", "[2 4]"},
		{"From", "ser-fro", "[1 2 3 4]"},
		{"From", "RealFrom <user-from@domain.example>", "[2 4]"}, // a comment is a name
		{"From", "smith, john <john@", "[5]"},
		{"Bcc", "hidden person <hp@x.example>", "[5]"},
		{"From", "jörg müller <jm@x.example>", "[6]"},
		{"To", "ÉRIC <eric@", "[6]"},
		{"To", "first@a.example, second@b.example", "[7]"},
		{"To", "two@b.example", "[8]"},
		{"To", "one@a.example", "[8]"},
		{"To", "groupname2", "[9]"},
		{"To", "g3@d.example", "[9]"},
		{"To", "groupname: g1@d.example, g2@d.example;", "[9]"},
		{"To", "g4@d.example", "[]"},
		{"Cc", "", "[1 2]"},
	}
	for _, tc := range cases {
		data, err := c.Search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: tc.key, Value: tc.value}}}, nil).Wait()
		if err != nil {
			t.Errorf("SEARCH %s %q: %v", tc.key, tc.value, err)
			continue
		}
		if got := fmt.Sprint(data.AllSeqNums()); got != tc.want {
			t.Errorf("SEARCH %s %q = %s, want %s", tc.key, tc.value, got, tc.want)
		}
	}
}

// TestLibrarySearchWire: SEARCH goes to the library with its SMALLER
// keys written NOT LARGER n-1, and nothing else changed.
func TestLibrarySearchWire(t *testing.T) {
	for line, want := range map[string]string{
		"a SEARCH SMALLER 3375 SENTBEFORE 28-Nov-2026":               "a SEARCH NOT LARGER 3374 SENTBEFORE 28-Nov-2026\r\n",
		"a UID SEARCH smaller 10 (SMALLER 20 LARGER 1)":              "a UID SEARCH NOT LARGER 9 (NOT LARGER 19 LARGER 1)\r\n",
		"a SEARCH RETURN (MIN) CHARSET UTF-8 OR SMALLER 5 LARGER 10": "a SEARCH RETURN (MIN) CHARSET UTF-8 OR NOT LARGER 4 LARGER 10\r\n",
		"a SEARCH SUBJECT SMALLER":                                   "a SEARCH SUBJECT SMALLER\r\n",
		"a SEARCH SMALLER 0 ALL":                                     "a SEARCH SMALLER 0 ALL\r\n",
		"a SEARCH SMALLER":                                           "a SEARCH SMALLER\r\n",
		"a SEARCH SINCE 1-Jan-2024 NOT SMALLER 7":                    "a SEARCH SINCE 1-Jan-2024 NOT NOT LARGER 6\r\n",
	} {
		cmd, err := readCommand(t, line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if got := string(librarySearchWire(cmd)); got != want {
			t.Errorf("%q: %q, want %q", line, got, want)
		}
	}
}

// TestSearchSmallerAnded: SMALLER keeps its bound when other keys
// follow it (imaptest's stress run found "SEARCH SMALLER 3375
// SENTBEFORE 28-Nov-2026" matching every message: the library's
// SearchCriteria.And dropped the bound), in SEARCH the library runs,
// in the front's SEARCH and in SORT.
func TestSearchSmallerAnded(t *testing.T) {
	ts := newTestServer(t)
	ts.deliver(t, simpleMessage("a@example.net", "b@example.org", "small", "Mon, 1 Jan 2024 10:00:00 +0000", "x"))
	ts.deliver(t, simpleMessage("a@example.net", "b@example.org", "large", "Mon, 1 Jan 2024 11:00:00 +0000", strings.Repeat("large body\r\n", 100)))
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("ENABLE CONDSTORE")
	rc.mustOK("SELECT INBOX")
	for cmd, want := range map[string]string{
		"SEARCH SMALLER 500 SENTBEFORE 1-Jan-2030":             "* SEARCH 1",
		"SEARCH SMALLER 500 LARGER 10":                         "* SEARCH 1",
		"SEARCH SMALLER 500 1:*":                               "* SEARCH 1",
		"UID SEARCH (SMALLER 500 SINCE 1-Jan-2000)":            "* SEARCH 1",
		"SEARCH NOT SMALLER 500 SENTSINCE 1-Jan-2000":          "* SEARCH 2",
		"SEARCH SMALLER 500 SENTBEFORE 1-Jan-2030 MODSEQ 1":    "* SEARCH 1 (MODSEQ ",
		"SORT (ARRIVAL) UTF-8 SMALLER 500 SINCE 1-Jan-2000":    "* SORT 1",
		"THREAD REFERENCES UTF-8 SMALLER 500 ON 1-Jan-2000":    "* THREAD",
		"THREAD REFERENCES UTF-8 SMALLER 500 SINCE 1-Jan-2000": "* THREAD (1)",
	} {
		untagged, st := rc.cmd(cmd)
		ok := len(untagged) == 1 && untagged[0] == want
		if strings.HasSuffix(want, "(MODSEQ ") {
			ok = len(untagged) == 1 && strings.HasPrefix(untagged[0], want)
		}
		if !strings.HasPrefix(st, "OK") || !ok {
			t.Errorf("%s: %q %q, want %q", cmd, untagged, st, want)
		}
	}
}
