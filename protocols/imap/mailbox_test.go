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
