package imap

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// TestPartialRange: RFC 9394 section 4's ranges, either order, and the
// pages they cut from a result.
func TestPartialRange(t *testing.T) {
	items := []uint32{10, 20, 30, 40, 50}
	for _, tc := range []struct {
		in   string
		want []uint32
	}{
		{"1:2", []uint32{10, 20}},
		{"2:1", []uint32{10, 20}},
		{"4:100", []uint32{40, 50}},
		{"6:9", nil},
		{"-1:-2", []uint32{40, 50}},
		{"-2:-1", []uint32{40, 50}},
		{"-5:-5", []uint32{10}},
		{"-3:-100", []uint32{10, 20, 30}},
		{"-6:-9", nil},
		{"1:4294967295", items},
	} {
		cmd := readOne(t, "a UID SEARCH RETURN (PARTIAL "+tc.in+") ALL")
		r, err := parsePartialRange(cmd.Args[3])
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if got := pick(r, items); fmt.Sprint(got) != fmt.Sprint(tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("%s: %v, want %v", tc.in, got, tc.want)
		}
	}
	for _, in := range []string{"0:5", "1:*", "-1:5", "5", "1:4294967296", "01:2", "-0:-1", "1:2:3", `"1:2"`, "1:+2"} {
		cmd := readOne(t, "a UID SEARCH RETURN (PARTIAL "+in+") ALL")
		if _, err := parsePartialRange(cmd.Args[3]); err == nil {
			t.Errorf("%s parsed", in)
		}
	}
}

// TestPartialRaw: SEARCH, UID SEARCH and SORT with RETURN (PARTIAL ...)
// and UID FETCH's PARTIAL modifier, on the wire (go-imap's client has
// no PARTIAL).
func TestPartialRaw(t *testing.T) {
	ts := newTestServer(t)
	for i := 1; i <= 6; i++ {
		ts.deliver(t, simpleMessage("a@example.net", testUser, "msg "+strconv.Itoa(i), "Mon, 1 Jan 2024 10:00:00 +0000", "body"))
	}
	rc := rawLogin(t, ts)
	caps := strings.Join(rc.mustOK("CAPABILITY"), " ")
	if !strings.Contains(caps, " PARTIAL") {
		t.Errorf("PARTIAL not advertised: %q", caps)
	}
	rc.mustOK("SELECT INBOX")
	// Expunge message 1: UIDs 2 to 6 are sequence numbers 1 to 5.
	rc.mustOK(`STORE 1 +FLAGS.SILENT (\Deleted)`)
	rc.mustOK("EXPUNGE")
	esearch := func(cmd, want string) {
		t.Helper()
		untagged, st := rc.cmd(cmd)
		w := `* ESEARCH (TAG "T` + strconv.Itoa(rc.tag) + `")` + want
		if !strings.HasPrefix(st, "OK") || len(untagged) != 1 || untagged[0] != w {
			t.Errorf("%s: %q %q, want %q", cmd, untagged, st, w)
		}
	}
	esearch("SEARCH RETURN (PARTIAL 1:2) ALL", " PARTIAL (1:2 1:2)")
	esearch("UID SEARCH RETURN (PARTIAL 1:2) ALL", " UID PARTIAL (1:2 2:3)")
	esearch("UID SEARCH RETURN (PARTIAL -1:-2) ALL", " UID PARTIAL (-1:-2 5:6)")
	esearch("UID SEARCH RETURN (PARTIAL -2:-1) NOT UID 6", " UID PARTIAL (-2:-1 4:5)")
	esearch("UID SEARCH RETURN (PARTIAL 4:100) ALL", " UID PARTIAL (4:100 5:6)")
	esearch("UID SEARCH RETURN (PARTIAL 6:9) ALL", " UID PARTIAL (6:9 NIL)")
	esearch("UID SEARCH RETURN (COUNT MIN PARTIAL 2:3) ALL", " UID MIN 2 COUNT 5 PARTIAL (2:3 3:4)")
	esearch("search return (partial 1:1) subject \"msg 4\"", " PARTIAL (1:1 3)")
	// SAVE with PARTIAL saves the page (RFC 9394 section 3.2).
	if untagged, st := rc.cmd("UID SEARCH RETURN (SAVE PARTIAL -1:-2) ALL"); !strings.HasPrefix(st, "OK") || len(untagged) != 1 {
		t.Errorf("SAVE PARTIAL: %q %q", untagged, st)
	}
	esearch("UID SEARCH RETURN (ALL) UID $", " UID ALL 5:6")
	// SORT: the page is cut in sort order.
	esearch("UID SORT RETURN (PARTIAL 1:2) (REVERSE ARRIVAL) UTF-8 ALL", " UID PARTIAL (1:2 6,5)")
	esearch("SORT RETURN (COUNT PARTIAL -1:-1) (REVERSE ARRIVAL) UTF-8 ALL", " COUNT 5 PARTIAL (-1:-1 1)")

	// UID FETCH (PARTIAL ...): only the page is fetched.
	fetchedUIDs := func(cmd string) string {
		t.Helper()
		untagged, st := rc.cmd(cmd)
		if !strings.HasPrefix(st, "OK") {
			t.Errorf("%s: %q", cmd, st)
		}
		var uids []string
		for _, l := range untagged {
			if i := strings.Index(l, "UID "); i >= 0 && strings.Contains(l, " FETCH ") {
				uids = append(uids, strings.Fields(l[i+4:])[0])
			}
		}
		return strings.Join(uids, ",")
	}
	for cmd, want := range map[string]string{
		"UID FETCH 1:* (FLAGS) (PARTIAL -1:-2)":      "5,6",
		"UID FETCH 1:* (UID FLAGS) (PARTIAL 1:2)":    "2,3",
		"UID FETCH 3:5 (FLAGS) (PARTIAL 2:10)":       "4,5",
		"UID FETCH 1:* (FLAGS) (PARTIAL 100:200)":    "",
		"UID FETCH $ (FLAGS) (PARTIAL 1:1)":          "5",
		"UID FETCH 1:* FLAGS (PARTIAL -1:-1)":        "6",
		"UID FETCH 1:* (FLAGS MODSEQ) (PARTIAL 1:1)": "2",
	} {
		if got := fetchedUIDs(cmd); got != want {
			t.Errorf("%s: UIDs %q, want %q", cmd, got, want)
		}
	}
	// With CHANGEDSINCE: the page of the changed messages.
	untagged := rc.mustOK("UID FETCH 1:* (MODSEQ)")
	var top uint64
	for _, l := range untagged {
		if i := strings.Index(l, "MODSEQ ("); i >= 0 {
			n, _ := strconv.ParseUint(strings.Fields(l[i+8:])[0][:len(strings.Fields(l[i+8:])[0])-1], 10, 64)
			top = max(top, n)
		}
	}
	rc.mustOK(`UID STORE 3,5,6 +FLAGS.SILENT (\Seen)`)
	cmd := fmt.Sprintf("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d PARTIAL 1:2)", top)
	if got := fetchedUIDs(cmd); got != "3,5" {
		t.Errorf("%s: UIDs %q, want 3,5", cmd, got)
	}

	for _, cmd := range []string{
		"SEARCH RETURN (PARTIAL 1:5 ALL) ALL",
		"SEARCH RETURN (PARTIAL 1:5 PARTIAL 6:9) ALL",
		"SEARCH RETURN (PARTIAL) ALL",
		"SEARCH RETURN (PARTIAL 0:5) ALL",
		"SEARCH RETURN (PARTIAL 1:*) ALL",
		"SEARCH RETURN (PARTIAL -1:5) ALL",
		"SORT RETURN (PARTIAL 1:2 ALL) (ARRIVAL) UTF-8 ALL",
		"FETCH 1:* (FLAGS) (PARTIAL 1:2)",
		"UID FETCH 1:* (FLAGS) (PARTIAL 1:2 PARTIAL 1:3)",
		"UID FETCH 1:* (FLAGS) (PARTIAL)",
	} {
		if _, st := rc.cmd(cmd); !strings.HasPrefix(st, "BAD") {
			t.Errorf("%s: %q, want BAD", cmd, st)
		}
	}
	rc.stillInSync()
}

// FuzzPartialRange: any PARTIAL argument parses to a range whose page
// lies within the result, or is a syntax error; never a panic.
func FuzzPartialRange(f *testing.F) {
	for _, s := range []string{"1:100", "-1:-100", "500:400", "0:1", "-1:2", "4294967295:1"} {
		f.Add(s, 7)
	}
	f.Fuzz(func(t *testing.T, arg string, n int) {
		if n < 0 || n > 1000 {
			return
		}
		cmd, err := readCommand(t, "a UID SEARCH RETURN (PARTIAL "+arg+") ALL")
		if err != nil || len(cmd.Args) < 4 {
			return
		}
		r, err := parsePartialRange(cmd.Args[3])
		if err != nil {
			if !isSearchSyntax(err) {
				t.Fatalf("%q: %v", arg, err)
			}
			return
		}
		lo, hi := r.bounds(n)
		if lo < 0 || hi > n || lo > hi || hi-lo > int(r.last-r.first)+1 {
			t.Fatalf("%q over %d: [%d, %d)", arg, n, lo, hi)
		}
	})
}
