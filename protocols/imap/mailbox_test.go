package imap

import (
	"sort"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// listNames runs LIST and returns the mailboxes by name.
func listNames(t *testing.T, c *imapclient.Client, ref, pattern string, options *imap.ListOptions) map[string]*imap.ListData {
	t.Helper()
	l, err := c.List(ref, pattern, options).Collect()
	if err != nil {
		t.Fatalf("list %q %q: %v", ref, pattern, err)
	}
	out := make(map[string]*imap.ListData, len(l))
	for _, d := range l {
		out[d.Mailbox] = d
	}
	return out
}

func sortedKeys(m map[string]*imap.ListData) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func hasAttr(d *imap.ListData, attr imap.MailboxAttr) bool {
	for _, a := range d.Attrs {
		if strings.EqualFold(string(a), string(attr)) {
			return true
		}
	}
	return false
}

func TestListSpecialUse(t *testing.T) {
	ts := newTestServer(t)
	c := ts.login(t, nil)

	all := listNames(t, c, "", "*", nil)
	want := map[string]imap.MailboxAttr{
		"INBOX": "", "Sent": imap.MailboxAttrSent, "Drafts": imap.MailboxAttrDrafts,
		"Trash": imap.MailboxAttrTrash, "Junk": imap.MailboxAttrJunk, "Archive": imap.MailboxAttrArchive,
	}
	if len(all) != len(want) {
		t.Fatalf("LIST * = %v", sortedKeys(all))
	}
	for name, attr := range want {
		d := all[name]
		if d == nil {
			t.Fatalf("LIST * lacks %s", name)
		}
		if d.Delim != '/' {
			t.Errorf("%s: delimiter %q", name, d.Delim)
		}
		if attr != "" && !hasAttr(d, attr) {
			t.Errorf("%s: attributes %v lack %s", name, d.Attrs, attr)
		}
		if !hasAttr(d, imap.MailboxAttrHasNoChildren) {
			t.Errorf("%s: attributes %v lack \\HasNoChildren", name, d.Attrs)
		}
	}

	special := listNames(t, c, "", "*", &imap.ListOptions{SelectSpecialUse: true})
	if len(special) != 5 || special["INBOX"] != nil {
		t.Errorf("LIST (SPECIAL-USE) = %v", sortedKeys(special))
	}

	root := listNames(t, c, "", "", nil)
	if d := root[""]; len(root) != 1 || d == nil || d.Delim != '/' || !hasAttr(d, imap.MailboxAttrNoSelect) {
		t.Errorf(`LIST "" "" = %v`, root)
	}

	if inbox := listNames(t, c, "", "inbox", nil); inbox["INBOX"] == nil {
		t.Errorf("LIST inbox (lower case) = %v", sortedKeys(inbox))
	}
}

func TestMailboxHierarchy(t *testing.T) {
	ts := newTestServer(t)
	c := ts.login(t, nil)

	if err := c.Create("Projects/2024/Q1", nil).Wait(); err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := c.Create("Projects/2024/Q2/", nil).Wait(); err != nil {
		t.Fatalf("create with trailing delimiter: %v", err)
	}
	if err := c.Create("Projects", nil).Wait(); imapCode(err) != imap.ResponseCodeAlreadyExists {
		t.Fatalf("create existing parent: got %v, want ALREADYEXISTS", err)
	}
	for _, bad := range []string{"a//b", "/lead", "wild*card", "per%cent"} {
		if err := c.Create(bad, nil).Wait(); err == nil {
			t.Errorf("create %q succeeded", bad)
		}
	}

	all := listNames(t, c, "", "Projects*", nil)
	if got := sortedKeys(all); strings.Join(got, ",") != "Projects,Projects/2024,Projects/2024/Q1,Projects/2024/Q2" {
		t.Fatalf("LIST Projects* = %v", got)
	}
	if !hasAttr(all["Projects"], imap.MailboxAttrHasChildren) || !hasAttr(all["Projects/2024/Q1"], imap.MailboxAttrHasNoChildren) {
		t.Errorf("children attributes: %v / %v", all["Projects"].Attrs, all["Projects/2024/Q1"].Attrs)
	}
	if got := sortedKeys(listNames(t, c, "", "Projects/%", nil)); strings.Join(got, ",") != "Projects/2024" {
		t.Errorf("LIST Projects/%% = %v", got)
	}
	if got := sortedKeys(listNames(t, c, "Projects", "%/Q%", nil)); strings.Join(got, ",") != "Projects/2024/Q1,Projects/2024/Q2" {
		t.Errorf("LIST with reference = %v", got)
	}

	// RENAME takes the children along.
	if err := c.Rename("Projects/2024", "Archive/2024", nil).Wait(); err != nil {
		t.Fatalf("rename: %v", err)
	}
	if got := sortedKeys(listNames(t, c, "", "Archive/*", nil)); strings.Join(got, ",") != "Archive/2024,Archive/2024/Q1,Archive/2024/Q2" {
		t.Errorf("after rename: %v", got)
	}
	if got := listNames(t, c, "", "Projects/*", nil); len(got) != 0 {
		t.Errorf("old names remain: %v", sortedKeys(got))
	}
	if err := c.Rename("Nope", "Other", nil).Wait(); imapCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("rename missing: got %v", err)
	}
	if err := c.Rename("Sent", "Drafts", nil).Wait(); imapCode(err) != imap.ResponseCodeAlreadyExists {
		t.Errorf("rename onto existing: got %v", err)
	}

	// DELETE removes one level; INBOX cannot go.
	if err := c.Delete("Archive/2024/Q2").Wait(); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if got := listNames(t, c, "", "Archive/2024/Q2", nil); len(got) != 0 {
		t.Errorf("deleted mailbox still listed")
	}
	if err := c.Delete("INBOX").Wait(); err == nil {
		t.Error("delete INBOX succeeded")
	}
	if err := c.Delete("Never-There").Wait(); imapCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("delete missing: got %v", err)
	}

	// CREATE-SPECIAL-USE.
	if err := c.Create("Outbox", &imap.CreateOptions{SpecialUse: []imap.MailboxAttr{imap.MailboxAttrSent}}).Wait(); err != nil {
		t.Fatalf("create with USE: %v", err)
	}
	if d := listNames(t, c, "", "Outbox", nil)["Outbox"]; d == nil || !hasAttr(d, imap.MailboxAttrSent) {
		t.Errorf("created special-use mailbox: %+v", d)
	}
	if err := c.Create("Stars", &imap.CreateOptions{SpecialUse: []imap.MailboxAttr{imap.MailboxAttrImportant}}).Wait(); imapCode(err) != useAttrCode {
		t.Errorf("unsupported USE: got %v, want USEATTR", err)
	}
}

func TestSubscriptions(t *testing.T) {
	ts := newTestServer(t)
	c := ts.login(t, nil)
	for _, name := range []string{"Lists/go", "Lists/rust"} {
		if err := c.Create(name, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Subscribe("Lists/go").Wait(); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := c.Subscribe("No/Such").Wait(); imapCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("subscribe missing: %v", err)
	}
	subscribed := listNames(t, c, "", "Lists/*", &imap.ListOptions{SelectSubscribed: true})
	if got := sortedKeys(subscribed); strings.Join(got, ",") != "Lists/go" || !hasAttr(subscribed["Lists/go"], imap.MailboxAttrSubscribed) {
		t.Errorf("LIST (SUBSCRIBED) = %v", got)
	}
	recursive := listNames(t, c, "", "%", &imap.ListOptions{SelectSubscribed: true, SelectRecursiveMatch: true})
	if d := recursive["Lists"]; d == nil || d.ChildInfo == nil || !d.ChildInfo.Subscribed {
		t.Errorf("RECURSIVEMATCH: %+v", recursive)
	}
	if d := listNames(t, c, "", "Lists/*", &imap.ListOptions{ReturnSubscribed: true})["Lists/go"]; d == nil || !hasAttr(d, imap.MailboxAttrSubscribed) {
		t.Errorf("RETURN (SUBSCRIBED): %+v", d)
	}

	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	lsub := rc.mustOK(`LSUB "" "Lists/*"`)
	if len(lsub) != 1 || !strings.Contains(lsub[0], `"Lists/go"`) && !strings.Contains(lsub[0], ` Lists/go`) {
		t.Errorf("LSUB = %q", lsub)
	}

	if err := c.Unsubscribe("Lists/go").Wait(); err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	if got := listNames(t, c, "", "*", &imap.ListOptions{SelectSubscribed: true}); len(got) != 0 && got["Lists/go"] != nil {
		t.Errorf("still subscribed: %v", sortedKeys(got))
	}
}

// lsubNames runs a raw LSUB and returns its attributes by name.
func lsubNames(t *testing.T, rc *rawConn, ref, pattern string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range rc.mustOK(`LSUB "` + ref + `" "` + pattern + `"`) {
		open, close := strings.IndexByte(l, '('), strings.IndexByte(l, ')')
		if !strings.HasPrefix(l, "* LSUB ") || open < 0 || close < open {
			t.Fatalf("LSUB response %q", l)
		}
		out[strings.Trim(l[strings.LastIndexByte(l, ' ')+1:], `"`)] = l[open+1 : close]
	}
	return out
}

// TestSubscribedListing: LSUB and LIST (SUBSCRIBED) report subscribed
// names whose mailbox was deleted (\NonExistent), LSUB's \Noselect
// parents of subscribed names the pattern misses, and RECURSIVEMATCH's
// CHILDINFO ("SUBSCRIBED") only for parents whose subscribed children
// the patterns miss (RFC 3501 sections 6.3.6 and 6.3.9, RFC 5258).
func TestSubscribedListing(t *testing.T) {
	ts := newTestServer(t)
	c := ts.login(t, nil)
	for _, name := range []string{"M/test", "M/test2/test", "M/test3/test3", "M/t6", "M/t7/t7", "M/t8/t8", "M/t8/t9"} {
		if err := c.Create(name, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		if name == "M/test3/test3" {
			continue
		}
		if err := c.Subscribe(name).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Subscribe("M/test3/test3").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete("M/t6").Wait(); err != nil {
		t.Fatal(err)
	}
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)

	lsub := lsubNames(t, rc, "", "M/%")
	if got := strings.Join(sortedStrings(lsub), ","); got != "M/t6,M/t7,M/t8,M/test,M/test2,M/test3" {
		t.Errorf(`LSUB "" M/%% = %q`, lsub)
	}
	for _, parent := range []string{"M/test2", "M/test3", "M/t7", "M/t8"} {
		if !strings.Contains(lsub[parent], `\Noselect`) {
			t.Errorf("LSUB parent %s: attributes %q lack \\Noselect", parent, lsub[parent])
		}
	}
	if strings.Contains(lsub["M/test"], `\Noselect`) {
		t.Errorf("LSUB M/test: %q", lsub["M/test"])
	}
	if got := strings.Join(sortedStrings(lsubNames(t, rc, "", "*test")), ","); got != "M/test,M/test2/test" {
		t.Errorf(`LSUB "" *test = %s`, got)
	}

	sub := listNames(t, c, "", "M/*", &imap.ListOptions{SelectSubscribed: true})
	if got := strings.Join(sortedKeys(sub), ","); got != "M/t6,M/t7/t7,M/t8/t8,M/t8/t9,M/test,M/test2/test,M/test3/test3" {
		t.Errorf("LIST (SUBSCRIBED) M/* = %s", got)
	}
	if d := sub["M/t6"]; d == nil || !hasAttr(d, imap.MailboxAttrNonExistent) || !hasAttr(d, imap.MailboxAttrSubscribed) || hasAttr(d, imap.MailboxAttrNoSelect) {
		t.Errorf("deleted subscribed mailbox: %+v", d)
	}
	for name, d := range sub {
		if name != "M/t6" && (hasAttr(d, imap.MailboxAttrNonExistent) || !hasAttr(d, imap.MailboxAttrSubscribed)) {
			t.Errorf("%s: attributes %v", name, d.Attrs)
		}
	}

	rec := &imap.ListOptions{SelectSubscribed: true, SelectRecursiveMatch: true, ReturnChildren: true}
	got := listNames(t, c, "", "M/test2%", rec)
	if d := got["M/test2"]; len(got) != 1 || d == nil || d.ChildInfo == nil || !d.ChildInfo.Subscribed || hasAttr(d, imap.MailboxAttrSubscribed) {
		t.Errorf("RECURSIVEMATCH M/test2%%: %v %+v", sortedKeys(got), d)
	}
	if got := listNames(t, c, "", "*t7", rec); strings.Join(sortedKeys(got), ",") != "M/t7/t7" || got["M/t7/t7"].ChildInfo != nil {
		t.Errorf("RECURSIVEMATCH *t7 (the child matches itself): %v", sortedKeys(got))
	}
	got = listNames(t, c, "", "*t8", rec)
	if strings.Join(sortedKeys(got), ",") != "M/t8,M/t8/t8" || got["M/t8"].ChildInfo == nil {
		t.Errorf("RECURSIVEMATCH *t8 (M/t8/t9 is missed): %v %+v", sortedKeys(got), got["M/t8"])
	}
	lines := rc.mustOK(`LIST (SUBSCRIBED RECURSIVEMATCH) "" ("M/test2" "M/test2/test")`)
	if len(lines) != 1 || !strings.HasSuffix(lines[0], `"M/test2/test"`) {
		t.Errorf("RECURSIVEMATCH with the child's own pattern: %q", lines)
	}

	// The kept name can be unsubscribed, once.
	if err := c.Unsubscribe("M/t6").Wait(); err != nil {
		t.Fatalf("unsubscribe a deleted mailbox's name: %v", err)
	}
	if got := listNames(t, c, "", "M/t6", &imap.ListOptions{SelectSubscribed: true}); len(got) != 0 {
		t.Errorf("unsubscribed name still listed: %v", sortedKeys(got))
	}
	if err := c.Unsubscribe("M/t6").Wait(); err == nil {
		t.Error("unsubscribed a name twice")
	}
	// A mailbox made again under a subscribed name is subscribed.
	if err := c.Delete("M/test").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("M/test", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if d := listNames(t, c, "", "M/test", &imap.ListOptions{ReturnSubscribed: true})["M/test"]; d == nil || !hasAttr(d, imap.MailboxAttrSubscribed) {
		t.Errorf("re-created mailbox under a subscribed name: %+v", d)
	}
}

func sortedStrings(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestListPatternSpecials: LIST patterns with atom-specials - quoted,
// escaped, as literals, or the "]" a list-mailbox may carry bare - are
// answered, never NO. (A pattern that is not valid modified UTF-7, such as
// one with a bare "&", is refused by the front with NO [CANNOT].)
func TestListPatternSpecials(t *testing.T) {
	ts := newTestServer(t)
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	names := []string{`a(b`, `a)b`, `a{b`, `a]b`, `a b`, `a"b`, `a\b`, `a%b`, `a*b`}
	for _, n := range names {
		if _, status := rc.cmd(`CREATE "` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(n) + `"`); !strings.HasPrefix(status, "OK") && !strings.HasPrefix(status, "NO [CANNOT]") {
			t.Fatalf("CREATE %q: %s", n, status)
		}
	}
	for _, tc := range []struct {
		pattern string
		want    int
	}{
		{`"a(b"`, 1}, {`"a)b"`, 1}, {`"a{b"`, 1}, {`a]b`, 1}, {`"a b"`, 1}, {`"a\"b"`, 1}, {`"a\\b"`, 1},
		{`{3}` + "\r\na b", 1}, {`"a%"`, 7}, {`("a(b" "a]b")`, 2}, {`"%(%"`, 1}, {`"*)*"`, 1}, {`"nothing[here"`, 0},
	} {
		if strings.HasPrefix(tc.pattern, "{") {
			// A literal: the server asks for it first.
			rc.send("L1 LIST \"\" " + tc.pattern[:3] + "\r\n")
			if l := rc.line(); !strings.HasPrefix(l, "+") {
				t.Fatalf("literal continuation: %q", l)
			}
			rc.send(tc.pattern[5:] + "\r\n")
			var got []string
			for {
				l := rc.line()
				if strings.HasPrefix(l, "L1 ") {
					if !strings.HasPrefix(l, "L1 OK") {
						t.Errorf("LIST with a literal pattern: %s", l)
					}
					break
				}
				got = append(got, l)
			}
			if len(got) != tc.want {
				t.Errorf("LIST with a literal pattern: %q", got)
			}
			continue
		}
		untagged, status := rc.cmd(`LIST "" ` + tc.pattern)
		if !strings.HasPrefix(status, "OK") || len(untagged) != tc.want {
			t.Errorf("LIST %s: %q %s, want %d responses", tc.pattern, untagged, status, tc.want)
		}
	}
}

func TestStatusAndListStatus(t *testing.T) {
	ts := newTestServer(t)
	c := ts.login(t, nil)
	msg1 := simpleMessage("a@example.net", testUser, "first", "Mon, 01 Jan 2024 10:00:00 +0000", "one")
	msg2 := simpleMessage("b@example.net", testUser, "second", "Tue, 02 Jan 2024 10:00:00 +0000", "two")
	ts.deliver(t, msg1)
	ts.deliver(t, msg2)
	selectMailbox(t, c, "INBOX", false)
	if _, err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}

	data, err := c.Status("INBOX", &imap.StatusOptions{
		NumMessages: true, UIDNext: true, UIDValidity: true, NumUnseen: true, NumDeleted: true, Size: true,
	}).Wait()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if data.NumMessages == nil || *data.NumMessages != 2 {
		t.Errorf("MESSAGES = %v", data.NumMessages)
	}
	if data.NumUnseen == nil || *data.NumUnseen != 1 {
		t.Errorf("UNSEEN = %v", data.NumUnseen)
	}
	if data.NumDeleted == nil || *data.NumDeleted != 0 {
		t.Errorf("DELETED = %v", data.NumDeleted)
	}
	if data.Size == nil || *data.Size != int64(len(msg1)+len(msg2)) {
		t.Errorf("SIZE = %v, want %d", data.Size, len(msg1)+len(msg2))
	}
	if data.UIDNext != 3 || data.UIDValidity == 0 {
		t.Errorf("UIDNEXT %d UIDVALIDITY %d", data.UIDNext, data.UIDValidity)
	}
	if _, err := c.Status("Missing", &imap.StatusOptions{NumMessages: true}).Wait(); imapCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("status of missing mailbox: %v", err)
	}

	// RECENT is always 0: this server keeps no \Recent state.
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	st := rc.mustOK("STATUS INBOX (RECENT MESSAGES)")
	if len(st) != 1 || !strings.Contains(st[0], "RECENT 0") || !strings.Contains(st[0], "MESSAGES 2") {
		t.Errorf("STATUS RECENT = %q", st)
	}

	l, err := c.List("", "*", &imap.ListOptions{ReturnStatus: &imap.StatusOptions{NumMessages: true, NumUnseen: true}}).Collect()
	if err != nil {
		t.Fatalf("LIST-STATUS: %v", err)
	}
	found := false
	for _, d := range l {
		if d.Mailbox != "INBOX" {
			continue
		}
		found = true
		if d.Status == nil || d.Status.NumMessages == nil || *d.Status.NumMessages != 2 || *d.Status.NumUnseen != 1 {
			t.Errorf("LIST-STATUS INBOX = %+v", d.Status)
		}
	}
	if !found {
		t.Error("LIST-STATUS lacks INBOX")
	}
}

func TestRenameInbox(t *testing.T) {
	ts := newTestServer(t)
	ts.deliver(t, simpleMessage("a@example.net", testUser, "keep me", "Mon, 01 Jan 2024 10:00:00 +0000", "body"))
	c := ts.login(t, nil)
	if err := c.Rename("INBOX", "Old-Inbox", nil).Wait(); err != nil {
		t.Fatalf("rename INBOX: %v", err)
	}
	inbox, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *inbox.NumMessages != 0 {
		t.Fatalf("INBOX after rename: %v %v", inbox, err)
	}
	old, err := c.Status("Old-Inbox", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *old.NumMessages != 1 {
		t.Fatalf("renamed mailbox: %v %v", old, err)
	}
}

func TestNamespace(t *testing.T) {
	ts := newTestServer(t)
	c := ts.login(t, nil)
	ns, err := c.Namespace().Wait()
	if err != nil {
		t.Fatalf("namespace: %v", err)
	}
	if len(ns.Personal) != 1 || ns.Personal[0].Prefix != "" || ns.Personal[0].Delim != '/' || ns.Other != nil || ns.Shared != nil {
		t.Errorf("namespace = %+v", ns)
	}
}

// TestDotLevelsAreRefused: "." and ".." levels are refused with NO
// [CANNOT] in CREATE and RENAME (mbsync refuses a whole account that
// lists one), and the session goes on.
func TestDotLevelsAreRefused(t *testing.T) {
	ts := newTestServer(t)
	c := ts.login(t, nil)
	if err := c.Create("Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"..", "../..", "a/../b", "INBOX/..", "a/./b", ".", "Work/.."} {
		if err := c.Create(bad, nil).Wait(); imapCode(err) != imap.ResponseCodeCannot {
			t.Errorf("CREATE %q: %v, want NO [CANNOT]", bad, err)
		}
		if err := c.Rename("Work", bad, nil).Wait(); imapCode(err) != imap.ResponseCodeCannot {
			t.Errorf("RENAME Work %q: %v, want NO [CANNOT]", bad, err)
		}
	}
	for name := range listNames(t, c, "", "*", nil) {
		for _, level := range strings.Split(name, "/") {
			if level == "." || level == ".." {
				t.Errorf("LIST shows %q", name)
			}
		}
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatalf("session after the refusals: %v", err)
	}
}

// TestAppendTargetAfterRenames: APPEND to INBOX while INBOX is selected
// goes to INBOX after a RENAME of INBOX (which moves its messages out,
// RFC 3501 section 6.3.5), and APPEND to a selected mailbox's name after
// another session renamed it away and made the name anew goes to the
// new mailbox.
func TestAppendTargetAfterRenames(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 2)
	a := dialRaw(t, ts.addr)
	a.mustOK("LOGIN " + testUser + " " + testPassword)
	a.mustOK("SELECT INBOX")
	b := dialRaw(t, ts.addr)
	b.mustOK("LOGIN " + testUser + " " + testPassword)
	b.mustOK("RENAME INBOX Old")

	msg := "Subject: after\r\n\r\nbody\r\n"
	a.mustOK("APPEND inbox {" + itoaTest(len(msg)) + "+}\r\n" + msg)
	for box, want := range map[string]string{"INBOX": "MESSAGES 1", "Old": "MESSAGES 2"} {
		if got := b.mustOK("STATUS " + box + " (MESSAGES)"); len(got) != 1 || !strings.Contains(got[0], want) {
			t.Errorf("STATUS %s after the APPEND: %q, want %s", box, got, want)
		}
	}

	a.mustOK("CREATE Work")
	a.mustOK("SELECT Work")
	b.mustOK("RENAME Work Gone")
	b.mustOK("CREATE Work")
	a.mustOK("APPEND Work {" + itoaTest(len(msg)) + "+}\r\n" + msg)
	for box, want := range map[string]string{"Work": "MESSAGES 1", "Gone": "MESSAGES 0"} {
		if got := b.mustOK("STATUS " + box + " (MESSAGES)"); len(got) != 1 || !strings.Contains(got[0], want) {
			t.Errorf("STATUS %s after the APPEND: %q, want %s", box, got, want)
		}
	}
}
