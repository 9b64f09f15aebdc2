package e2e

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// appendMessage APPENDs msg and returns the APPENDUID data.
func appendMessage(t testing.TB, c *imapclient.Client, mailbox string, msg []byte, opts *imap.AppendOptions) *imap.AppendData {
	t.Helper()
	cmd := c.Append(mailbox, int64(len(msg)), opts)
	if _, err := cmd.Write(msg); err != nil {
		t.Fatalf("append to %s: %v", mailbox, err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatalf("append to %s: %v", mailbox, err)
	}
	d, err := cmd.Wait()
	if err != nil {
		t.Fatalf("append to %s: %v", mailbox, err)
	}
	return d
}

// listMailboxes returns the LIST "" "*" results by name.
func listMailboxes(t testing.TB, c *imapclient.Client, opts *imap.ListOptions) map[string]*imap.ListData {
	t.Helper()
	list, err := c.List("", "*", opts).Collect()
	if err != nil {
		t.Fatalf("LIST: %v", err)
	}
	out := make(map[string]*imap.ListData, len(list))
	for _, l := range list {
		out[l.Mailbox] = l
	}
	return out
}

func names(m map[string]*imap.ListData) []string {
	var out []string
	for name := range m {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// TestIMAPMailboxes covers capabilities, LIST with SPECIAL-USE,
// CREATE/RENAME/SUBSCRIBE/DELETE, STATUS, SELECT/EXAMINE, NAMESPACE and
// UNSELECT against the real binary.
func TestIMAPMailboxes(t *testing.T) {
	t.Parallel()
	n := sharedNode(t)
	user, pass := n.newUser(t, "imap-boxes")
	msgs := [][]byte{
		simpleMessage("a@remote.example", user, "boxes one", "first"),
		simpleMessage("b@remote.example", user, "boxes two", "second, a little longer"),
	}
	for _, m := range msgs {
		smtpSend(t, n, "a@remote.example", []string{user}, m)
	}

	c := imapDialStartTLS(t, n, user, pass, nil)
	caps := c.Caps()
	for _, want := range []imap.Cap{imap.CapIMAP4rev1, imap.CapIMAP4rev2, imap.CapIdle, imap.CapUIDPlus, imap.CapMove,
		imap.CapSpecialUse, imap.CapNamespace, imap.CapUnselect, imap.CapESearch, imap.CapListStatus, imap.CapStatusSize, imap.CapBinary} {
		if !caps.Has(want) {
			t.Errorf("capability %s missing: %v", want, caps)
		}
	}

	// Every new user has the six mailboxes, five with special-use
	// attributes.
	boxes := listMailboxes(t, c, &imap.ListOptions{ReturnSpecialUse: true})
	special := map[string]imap.MailboxAttr{"Sent": imap.MailboxAttrSent, "Drafts": imap.MailboxAttrDrafts,
		"Trash": imap.MailboxAttrTrash, "Junk": imap.MailboxAttrJunk, "Archive": imap.MailboxAttrArchive}
	if got, want := names(boxes), []string{"Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"}; !slices.Equal(got, want) {
		t.Fatalf("LIST: %q, want %q", got, want)
	}
	for name, attr := range special {
		if !slices.Contains(boxes[name].Attrs, attr) {
			t.Errorf("LIST %s attrs %v, want %s", name, boxes[name].Attrs, attr)
		}
		if boxes[name].Delim != '/' {
			t.Errorf("LIST %s delimiter %q, want /", name, boxes[name].Delim)
		}
	}
	onlySpecial := listMailboxes(t, c, &imap.ListOptions{SelectSpecialUse: true})
	if got := names(onlySpecial); !slices.Equal(got, []string{"Archive", "Drafts", "Junk", "Sent", "Trash"}) {
		t.Errorf("LIST (SPECIAL-USE): %q", got)
	}

	// CREATE, RENAME, SUBSCRIBE, UNSUBSCRIBE, DELETE.
	for _, name := range []string{"Projects", "Projects/2026"} {
		if err := c.Create(name, nil).Wait(); err != nil {
			t.Fatalf("CREATE %s: %v", name, err)
		}
	}
	if err := c.Create("Projects", nil).Wait(); err == nil {
		t.Error("CREATE of an existing mailbox succeeded")
	}
	if err := c.Rename("Projects/2026", "Projects/Done", nil).Wait(); err != nil {
		t.Fatalf("RENAME: %v", err)
	}
	boxes = listMailboxes(t, c, nil)
	if _, ok := boxes["Projects/Done"]; !ok || boxes["Projects/2026"] != nil {
		t.Errorf("after RENAME: %q", names(boxes))
	}
	if !slices.Contains(boxes["Projects"].Attrs, imap.MailboxAttrHasChildren) {
		t.Errorf("Projects attrs %v, want \\HasChildren", boxes["Projects"].Attrs)
	}
	if err := c.Subscribe("Projects/Done").Wait(); err != nil {
		t.Fatalf("SUBSCRIBE: %v", err)
	}
	subscribed := listMailboxes(t, c, &imap.ListOptions{SelectSubscribed: true})
	if _, ok := subscribed["Projects/Done"]; !ok {
		t.Errorf("LIST (SUBSCRIBED) after SUBSCRIBE: %q", names(subscribed))
	}
	if err := c.Unsubscribe("Projects/Done").Wait(); err != nil {
		t.Fatalf("UNSUBSCRIBE: %v", err)
	}
	subscribed = listMailboxes(t, c, &imap.ListOptions{SelectSubscribed: true})
	if _, ok := subscribed["Projects/Done"]; ok {
		t.Errorf("LIST (SUBSCRIBED) after UNSUBSCRIBE: %q", names(subscribed))
	}
	if err := c.Delete("Projects/Done").Wait(); err != nil {
		t.Fatalf("DELETE: %v", err)
	}
	if _, ok := listMailboxes(t, c, nil)["Projects/Done"]; ok {
		t.Error("mailbox still listed after DELETE")
	}
	if err := c.Delete("INBOX").Wait(); err == nil {
		t.Error("DELETE INBOX succeeded")
	}
	if _, err := c.Select("No/Such/Box", nil).Wait(); err == nil {
		t.Error("SELECT of a missing mailbox succeeded")
	}

	// STATUS, and LIST-STATUS agreeing with it.
	st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true, UIDNext: true, UIDValidity: true, NumUnseen: true, Size: true}).Wait()
	if err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	wantSize := int64(0)
	if *st.NumMessages != 2 || *st.NumUnseen != 2 || st.UIDNext < 3 || st.UIDValidity == 0 || st.Size == nil {
		t.Fatalf("STATUS INBOX: messages %d unseen %d uidnext %d uidvalidity %d", *st.NumMessages, *st.NumUnseen, st.UIDNext, st.UIDValidity)
	}
	ls := listMailboxes(t, c, &imap.ListOptions{ReturnStatus: &imap.StatusOptions{NumMessages: true}})
	if s := ls["INBOX"].Status; s == nil || *s.NumMessages != 2 {
		t.Errorf("LIST RETURN (STATUS) INBOX: %+v", s)
	}

	// EXAMINE is read-only: fetching a body does not set \Seen, STORE is
	// refused.
	ex := selectBox(t, c, "INBOX", true)
	if ex.NumMessages != 2 || ex.UIDValidity != st.UIDValidity {
		t.Errorf("EXAMINE: %d messages, uidvalidity %d; STATUS said 2, %d", ex.NumMessages, ex.UIDValidity, st.UIDValidity)
	}
	for _, m := range fetchAll(t, c, &imap.FetchOptions{RFC822Size: true, BodySection: []*imap.FetchItemBodySection{{}}}) {
		wantSize += m.RFC822Size
	}
	if *st.Size != wantSize {
		t.Errorf("STATUS SIZE %d, want the sum of RFC822.SIZE %d", *st.Size, wantSize)
	}
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err == nil {
		t.Error("STORE in an EXAMINEd mailbox succeeded")
	}
	sel := selectBox(t, c, "INBOX", false)
	if sel.NumMessages != 2 {
		t.Errorf("SELECT: %d messages", sel.NumMessages)
	}
	for _, m := range fetchAll(t, c, &imap.FetchOptions{Flags: true}) {
		if slices.Contains(m.Flags, imap.FlagSeen) {
			t.Errorf("message %d is \\Seen after a fetch in EXAMINE", m.SeqNum)
		}
	}
	ns, err := c.Namespace().Wait()
	if err != nil || len(ns.Personal) != 1 || ns.Personal[0].Delim != '/' {
		t.Errorf("NAMESPACE: %+v %v", ns, err)
	}
	if err := c.Unselect().Wait(); err != nil {
		t.Errorf("UNSELECT: %v", err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Errorf("LOGOUT: %v", err)
	}
}

// TestIMAPFetch fetches every item of a realistic multipart message
// with an attachment: ENVELOPE, BODYSTRUCTURE, BODY[...] sections,
// BINARY, partial fetches, RFC822.SIZE, INTERNALDATE, FLAGS and UID.
func TestIMAPFetch(t *testing.T) {
	t.Parallel()
	n := sharedNode(t)
	user, pass := n.newUser(t, "imap-fetch")

	date := time.Date(2026, 3, 14, 15, 9, 26, 0, time.FixedZone("", 3600))
	pdf := pdfBytes()
	notes := "Agenda:\n1. budget\n2. hiring\n"
	spec := mailSpec{
		From: "Ada Lovelace <ada@remote.example>", To: "Fetch Tester <" + user + ">",
		Subject: "Quarterly numbers", MessageID: uniqueID("fetch"), Date: date,
		Text: "Hello,\n\nthe numbers are attached.\n\nAda\n",
		HTML: "<p>Hello,</p><p>the numbers are attached.</p>",
		Attachments: []attachment{
			{Name: "numbers.pdf", ContentType: "application/pdf", Data: pdf, Base64: true},
			{Name: "notes.txt", ContentType: "text/plain", Data: []byte(notes)},
		},
	}
	original := spec.build()
	before := time.Now().Add(-time.Minute)
	smtpSend(t, n, "ada@remote.example", []string{user}, original)

	c := imapDialTLS(t, n, user, pass, nil)
	selectBox(t, c, "INBOX", false)
	headerFields := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject", "Message-ID"}, Peek: true}
	sections := map[string]*imap.FetchItemBodySection{
		"full":     {Peek: true},
		"header":   {Specifier: imap.PartSpecifierHeader, Peek: true},
		"fields":   headerFields,
		"text":     {Specifier: imap.PartSpecifierText, Peek: true},
		"1.1":      {Part: []int{1, 1}, Peek: true},
		"1.2":      {Part: []int{1, 2}, Peek: true},
		"2":        {Part: []int{2}, Peek: true},
		"2.MIME":   {Part: []int{2}, Specifier: imap.PartSpecifierMIME, Peek: true},
		"3":        {Part: []int{3}, Peek: true},
		"partial":  {Peek: true, Partial: &imap.SectionPartial{Offset: 10, Size: 50}},
		"pastend":  {Part: []int{3}, Peek: true, Partial: &imap.SectionPartial{Offset: 5, Size: 1 << 20}},
		"1.1-part": {Part: []int{1, 1}, Peek: true, Partial: &imap.SectionPartial{Offset: 0, Size: 5}},
	}
	var list []*imap.FetchItemBodySection
	for _, s := range sections {
		list = append(list, s)
	}
	binary := &imap.FetchItemBinarySection{Part: []int{2}, Peek: true}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{
		Envelope: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true}, Flags: true,
		InternalDate: true, RFC822Size: true, UID: true, BodySection: list,
		BinarySection: []*imap.FetchItemBinarySection{binary},
	}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH: %d messages, %v", len(msgs), err)
	}
	m := msgs[0]
	get := func(name string) string { return string(m.FindBodySection(sections[name])) }

	full := get("full")
	if !strings.HasSuffix(full, string(original)) || !strings.HasPrefix(full, "Return-Path: <ada@remote.example>\r\nReceived: ") {
		t.Errorf("BODY[] is not the sent message behind Return-Path and Received:\n%.300s", full)
	}
	if m.RFC822Size != int64(len(full)) {
		t.Errorf("RFC822.SIZE %d, BODY[] has %d bytes", m.RFC822Size, len(full))
	}
	if m.UID == 0 || m.InternalDate.Before(before) || m.InternalDate.After(time.Now().Add(time.Minute)) {
		t.Errorf("UID %d, INTERNALDATE %v", m.UID, m.InternalDate)
	}
	if slices.Contains(m.Flags, imap.FlagSeen) {
		t.Errorf("new message flags %v", m.Flags)
	}

	env := m.Envelope
	if env.Subject != spec.Subject || env.MessageID != spec.MessageID || !env.Date.Equal(date) ||
		len(env.From) != 1 || env.From[0].Name != "Ada Lovelace" || env.From[0].Addr() != "ada@remote.example" ||
		len(env.To) != 1 || env.To[0].Addr() != user {
		t.Errorf("ENVELOPE %+v", env)
	}

	var structure []string
	m.BodyStructure.Walk(func(path []int, part imap.BodyStructure) bool {
		desc := fmt.Sprintf("%v %s", path, part.MediaType())
		if sp, ok := part.(*imap.BodyStructureSinglePart); ok {
			desc += " " + strings.ToLower(sp.Encoding)
			if f := sp.Filename(); f != "" {
				desc += " " + f
			}
			if d := sp.Disposition(); d != nil {
				desc += " " + strings.ToLower(d.Value)
			}
		}
		structure = append(structure, desc)
		return true
	})
	wantStructure := []string{
		"[] multipart/mixed",
		"[1] multipart/alternative",
		"[1 1] text/plain 7bit",
		"[1 2] text/html 7bit",
		"[2] application/pdf base64 numbers.pdf attachment",
		"[3] text/plain 7bit notes.txt attachment",
	}
	if !slices.Equal(structure, wantStructure) {
		t.Errorf("BODYSTRUCTURE\n got %q\nwant %q", structure, wantStructure)
	}

	header, _, _ := strings.Cut(full, "\r\n\r\n")
	// The CRLF before a boundary belongs to the boundary (RFC 2046
	// section 5.1.1), so a part's content ends without it.
	part := func(s string) string { return strings.TrimSuffix(crlf(s), "\r\n") }
	checks := []struct{ name, got, want string }{
		{"BODY[HEADER]", get("header"), header + "\r\n\r\n"},
		{"BODY[HEADER.FIELDS]", get("fields"), "Subject: Quarterly numbers\r\nMessage-ID: <" + spec.MessageID + ">\r\n\r\n"},
		{"BODY[TEXT]", get("text"), full[len(header)+4:]},
		{"BODY[1.1]", get("1.1"), part(spec.Text)},
		{"BODY[1.2]", get("1.2"), part(spec.HTML)},
		{"BODY[2.MIME]", get("2.MIME"), "Content-Type: application/pdf; name=\"numbers.pdf\"\r\nContent-Disposition: attachment; filename=\"numbers.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"},
		{"BODY[3]", get("3"), part(notes)},
		{"BODY[]<10.50>", get("partial"), full[10:60]},
		{"BODY[3]<5.1048576>", get("pastend"), part(notes)[5:]},
		{"BODY[1.1]<0.5>", get("1.1-part"), "Hello"},
		{"BINARY[2]", string(m.FindBinarySection(binary)), string(pdf)},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s:\n got %q\nwant %q", ch.name, ch.got, ch.want)
		}
	}
	if b64 := get("2"); !strings.HasPrefix(b64, "JVBERi0xLjQK") {
		t.Errorf("BODY[2] is not the base64 attachment: %.40q", b64)
	}

	// PEEK leaves \Seen alone; BODY[] sets it.
	flags := func() []imap.Flag {
		msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true}).Collect()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("FETCH FLAGS: %v", err)
		}
		return msgs[0].Flags
	}
	if slices.Contains(flags(), imap.FlagSeen) {
		t.Fatal("\\Seen set by BODY.PEEK")
	}
	body := &imap.FetchItemBodySection{Part: []int{1, 1}}
	if _, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{body}}).Collect(); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(flags(), imap.FlagSeen) {
		t.Error("\\Seen not set by BODY[1.1]")
	}
	// UID FETCH addresses the same message.
	byUID, err := c.Fetch(imap.UIDSetNum(m.UID), &imap.FetchOptions{Envelope: true}).Collect()
	if err != nil || len(byUID) != 1 || byUID[0].Envelope.MessageID != spec.MessageID {
		t.Errorf("UID FETCH %d: %v", m.UID, err)
	}
	if !bytes.Equal(original, []byte(full[len(full)-len(original):])) {
		t.Error("message bytes changed in store")
	}
}

// TestIMAPStoreSearch changes flags with STORE and searches by header,
// body text, flags, internal and sent dates, and sizes.
func TestIMAPStoreSearch(t *testing.T) {
	t.Parallel()
	n := sharedNode(t)
	user, pass := n.newUser(t, "imap-search")
	c := imapDialTLS(t, n, user, pass, nil)

	// 1: old, small; 2: large, appended; 3: delivered over SMTP now, with
	// a text attachment.
	m1 := mailSpec{From: "alice@remote.example", To: user, Subject: "Quarterly report", MessageID: uniqueID("s1"),
		Date: time.Date(2020, 1, 15, 10, 0, 0, 0, time.UTC), Text: "the budget numbers"}.build()
	m2 := mailSpec{From: "bob@remote.example", To: user, Subject: "Lunch plans", MessageID: uniqueID("s2"),
		Date: time.Date(2021, 6, 1, 12, 0, 0, 0, time.UTC), Text: "pizza on friday\n" + strings.Repeat("filler line of text\n", 1000)}.build()
	m3 := mailSpec{From: "carol@remote.example", To: user, Subject: "Report follow-up", MessageID: uniqueID("s3"),
		Date: time.Date(2022, 3, 10, 9, 30, 0, 0, time.UTC), Text: "see the attachment",
		Attachments: []attachment{{Name: "minutes.txt", ContentType: "text/plain", Data: []byte("we agreed on the zebra crossing\n")}}}.build()
	appendMessage(t, c, "INBOX", m1, &imap.AppendOptions{Time: time.Date(2020, 1, 16, 8, 0, 0, 0, time.UTC)})
	appendMessage(t, c, "INBOX", m2, &imap.AppendOptions{Time: time.Date(2021, 6, 2, 8, 0, 0, 0, time.UTC)})
	smtpSend(t, n, "carol@remote.example", []string{user}, m3)
	if sel := selectBox(t, c, "INBOX", false); sel.NumMessages != 3 {
		t.Fatalf("INBOX has %d messages, want 3", sel.NumMessages)
	}

	// STORE: add, remove and replace flags; the untagged FETCH reports
	// the new flags. This session is the first to see the messages, so
	// they stay \Recent in it (RFC 3501 section 2.3.2), whatever STORE
	// does.
	store := func(seq uint32, op imap.StoreFlagsOp, flags ...imap.Flag) []imap.Flag {
		t.Helper()
		res, err := c.Store(imap.SeqSetNum(seq), &imap.StoreFlags{Op: op, Flags: flags}, nil).Collect()
		if err != nil || len(res) != 1 {
			t.Fatalf("STORE %d: %v", seq, err)
		}
		var got []imap.Flag
		recent := false
		for _, f := range res[0].Flags {
			if f == imap.Flag(`\Recent`) {
				recent = true
				continue
			}
			got = append(got, f)
		}
		if !recent {
			t.Errorf("STORE %d: flags %v lack \\Recent", seq, res[0].Flags)
		}
		sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
		return got
	}
	if got := store(1, imap.StoreFlagsAdd, imap.FlagFlagged, imap.FlagSeen); !slices.Equal(got, []imap.Flag{imap.FlagFlagged, imap.FlagSeen}) {
		t.Errorf("STORE +FLAGS: %v", got)
	}
	if got := store(1, imap.StoreFlagsDel, imap.FlagSeen); !slices.Equal(got, []imap.Flag{imap.FlagFlagged}) {
		t.Errorf("STORE -FLAGS: %v", got)
	}
	if got := store(2, imap.StoreFlagsSet, imap.FlagSeen, "$Important"); !slices.Equal(got, []imap.Flag{"$Important", imap.FlagSeen}) {
		t.Errorf("STORE FLAGS: %v", got)
	}
	if err := c.Store(imap.SeqSetNum(3), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagAnswered}, Silent: true}, nil).Close(); err != nil {
		t.Errorf("STORE +FLAGS.SILENT: %v", err)
	}

	day := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }
	searches := []struct {
		name     string
		criteria imap.SearchCriteria
		want     []uint32
	}{
		{"SUBJECT report", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "report"}}}, []uint32{1, 3}},
		{"FROM bob", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "bob@remote"}}}, []uint32{2}},
		{"HEADER Message-ID", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Message-ID", Value: "s3."}}}, []uint32{3}},
		{"BODY pizza", imap.SearchCriteria{Body: []string{"pizza"}}, []uint32{2}},
		{"BODY budget", imap.SearchCriteria{Body: []string{"BUDGET"}}, []uint32{1}},
		{"TEXT zebra (attachment)", imap.SearchCriteria{Text: []string{"zebra crossing"}}, []uint32{3}},
		{"TEXT lunch (header)", imap.SearchCriteria{Text: []string{"lunch"}}, []uint32{2}},
		{"FLAGGED", imap.SearchCriteria{Flag: []imap.Flag{imap.FlagFlagged}}, []uint32{1}},
		{"UNFLAGGED", imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagFlagged}}, []uint32{2, 3}},
		{"SEEN", imap.SearchCriteria{Flag: []imap.Flag{imap.FlagSeen}}, []uint32{2}},
		{"ANSWERED", imap.SearchCriteria{Flag: []imap.Flag{imap.FlagAnswered}}, []uint32{3}},
		{"KEYWORD $Important", imap.SearchCriteria{Flag: []imap.Flag{"$Important"}}, []uint32{2}},
		{"SINCE 2021-01-01", imap.SearchCriteria{Since: day(2021, 1, 1)}, []uint32{2, 3}},
		{"BEFORE 2021-01-01", imap.SearchCriteria{Before: day(2021, 1, 1)}, []uint32{1}},
		{"SENTBEFORE 2021-01-01", imap.SearchCriteria{SentBefore: day(2021, 1, 1)}, []uint32{1}},
		{"SENTSINCE 2022-01-01", imap.SearchCriteria{SentSince: day(2022, 1, 1)}, []uint32{3}},
		{"SENTSINCE+SENTBEFORE", imap.SearchCriteria{SentSince: day(2021, 1, 1), SentBefore: day(2022, 1, 1)}, []uint32{2}},
		{"LARGER 10000", imap.SearchCriteria{Larger: 10000}, []uint32{2}},
		{"SMALLER 10000", imap.SearchCriteria{Smaller: 10000}, []uint32{1, 3}},
		{"NOT SUBJECT report", imap.SearchCriteria{Not: []imap.SearchCriteria{{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "report"}}}}}, []uint32{2}},
		{"OR FROM carol FLAGGED", imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{
			{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "carol"}}},
			{Flag: []imap.Flag{imap.FlagFlagged}},
		}}}, []uint32{1, 3}},
		{"no match", imap.SearchCriteria{Body: []string{"no such words anywhere"}}, nil},
	}
	for _, s := range searches {
		res, err := c.Search(&s.criteria, nil).Wait()
		if err != nil {
			t.Errorf("SEARCH %s: %v", s.name, err)
			continue
		}
		if got := res.AllSeqNums(); !slices.Equal(got, s.want) {
			t.Errorf("SEARCH %s: %v, want %v", s.name, got, s.want)
		}
	}

	// UID SEARCH answers UIDs; ESEARCH returns MIN, MAX and COUNT.
	all := fetchAll(t, c, &imap.FetchOptions{UID: true})
	res, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "report"}}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got := res.AllUIDs(); !slices.Equal(got, []imap.UID{all[0].UID, all[2].UID}) {
		t.Errorf("UID SEARCH: %v, want %v and %v", got, all[0].UID, all[2].UID)
	}
	es, err := c.Search(&imap.SearchCriteria{Since: day(2021, 1, 1)}, &imap.SearchOptions{ReturnMin: true, ReturnMax: true, ReturnCount: true}).Wait()
	if err != nil || es.Min != 2 || es.Max != 3 || es.Count != 2 {
		t.Errorf("SEARCH RETURN (MIN MAX COUNT): %+v %v", es, err)
	}
}

// TestIMAPCopyMoveAppendExpunge covers COPY and MOVE with COPYUID,
// APPEND with APPENDUID, EXPUNGE and UID EXPUNGE.
func TestIMAPCopyMoveAppendExpunge(t *testing.T) {
	t.Parallel()
	n := sharedNode(t)
	user, pass := n.newUser(t, "imap-copy")
	for i := 1; i <= 3; i++ {
		smtpSend(t, n, "x@remote.example", []string{user}, simpleMessage("x@remote.example", user, fmt.Sprintf("copy %d", i), "body"))
	}
	c := imapDialStartTLS(t, n, user, pass, nil)
	status := func(box string) *imap.StatusData {
		t.Helper()
		st, err := c.Status(box, &imap.StatusOptions{NumMessages: true, UIDValidity: true, UIDNext: true}).Wait()
		if err != nil {
			t.Fatalf("STATUS %s: %v", box, err)
		}
		return st
	}
	archive := status("Archive")
	selectBox(t, c, "INBOX", false)
	uids := fetchAll(t, c, &imap.FetchOptions{UID: true})

	// COPY keeps the source and answers COPYUID with the destination's
	// UIDVALIDITY.
	cp, err := c.Copy(imap.SeqSetNum(1), "Archive").Wait()
	if err != nil {
		t.Fatalf("COPY: %v", err)
	}
	if cp.UIDValidity != archive.UIDValidity || cp.SourceUIDs.String() != fmt.Sprint(uids[0].UID) || cp.DestUIDs.String() != fmt.Sprint(archive.UIDNext) {
		t.Errorf("COPYUID %d %s %s; want %d %d %d", cp.UIDValidity, cp.SourceUIDs, cp.DestUIDs, archive.UIDValidity, uids[0].UID, archive.UIDNext)
	}
	if got := *status("Archive").NumMessages; got != 1 {
		t.Errorf("Archive has %d messages after COPY", got)
	}

	// MOVE removes from the source (an EXPUNGE) and answers COPYUID.
	trash := status("Trash")
	mv, err := c.Move(imap.SeqSetNum(2), "Trash").Wait()
	if err != nil {
		t.Fatalf("MOVE: %v", err)
	}
	if mv.UIDValidity != trash.UIDValidity || mv.SourceUIDs.String() != fmt.Sprint(uids[1].UID) || mv.DestUIDs.String() != fmt.Sprint(trash.UIDNext) {
		t.Errorf("MOVE COPYUID %d %s %s", mv.UIDValidity, mv.SourceUIDs, mv.DestUIDs)
	}
	if got := subjects(t, c); !slices.Equal(got, []string{"copy 1", "copy 3"}) {
		t.Errorf("INBOX after MOVE: %q", got)
	}

	// APPEND answers APPENDUID and keeps flags, date and bytes.
	drafts := status("Drafts")
	draft := simpleMessage(user, "friend@remote.example", "a draft", "unfinished thoughts")
	when := time.Date(2025, 12, 24, 18, 30, 0, 0, time.UTC)
	ap := appendMessage(t, c, "Drafts", draft, &imap.AppendOptions{Flags: []imap.Flag{imap.FlagDraft, "$Later"}, Time: when})
	if ap.UIDValidity != drafts.UIDValidity || ap.UID != drafts.UIDNext {
		t.Errorf("APPENDUID %d %d, want %d %d", ap.UIDValidity, ap.UID, drafts.UIDValidity, drafts.UIDNext)
	}
	selectBox(t, c, "Drafts", true)
	whole := &imap.FetchItemBodySection{Peek: true}
	got, err := c.Fetch(imap.UIDSetNum(ap.UID), &imap.FetchOptions{Flags: true, InternalDate: true, BodySection: []*imap.FetchItemBodySection{whole}}).Collect()
	if err != nil || len(got) != 1 {
		t.Fatalf("fetch appended message: %v", err)
	}
	if !bytes.Equal(got[0].FindBodySection(whole), draft) || !got[0].InternalDate.Equal(when) ||
		!slices.Contains(got[0].Flags, imap.FlagDraft) || !slices.Contains(got[0].Flags, "$Later") {
		t.Errorf("appended message: flags %v date %v", got[0].Flags, got[0].InternalDate)
	}

	// EXPUNGE removes \Deleted messages and reports their numbers.
	selectBox(t, c, "INBOX", false)
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	seqs, err := c.Expunge().Collect()
	if err != nil || !slices.Equal(seqs, []uint32{1}) {
		t.Errorf("EXPUNGE: %v %v, want [1]", seqs, err)
	}
	if got := subjects(t, c); !slices.Equal(got, []string{"copy 3"}) {
		t.Errorf("INBOX after EXPUNGE: %q", got)
	}

	// UID EXPUNGE removes only the named \Deleted messages.
	if _, err := c.Copy(imap.SeqSetNum(1), "Archive").Wait(); err != nil {
		t.Fatal(err)
	}
	selectBox(t, c, "Archive", false)
	arch := fetchAll(t, c, &imap.FetchOptions{UID: true})
	if len(arch) != 2 {
		t.Fatalf("Archive has %d messages, want 2", len(arch))
	}
	var both imap.SeqSet
	both.AddRange(1, 2)
	if err := c.Store(both, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UIDExpunge(imap.UIDSetNum(arch[1].UID)).Collect(); err != nil {
		t.Fatalf("UID EXPUNGE: %v", err)
	}
	left := fetchAll(t, c, &imap.FetchOptions{UID: true, Flags: true})
	if len(left) != 1 || left[0].UID != arch[0].UID || !slices.Contains(left[0].Flags, imap.FlagDeleted) {
		t.Errorf("Archive after UID EXPUNGE %d: %+v", arch[1].UID, left)
	}
}

// TestIMAPIdle shows that a session in IDLE is told about a message
// delivered over SMTP and about a flag change made by another session.
func TestIMAPIdle(t *testing.T) {
	t.Parallel()
	n := sharedNode(t)
	user, pass := n.newUser(t, "imap-idle")
	smtpSend(t, n, "x@remote.example", []string{user}, simpleMessage("x@remote.example", user, "before idle", "one"))

	exists := make(chan uint32, 16)
	fetched := make(chan []imap.Flag, 16)
	handler := &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				exists <- *d.NumMessages
			}
		},
		Fetch: func(msg *imapclient.FetchMessageData) {
			buf, err := msg.Collect()
			if err == nil {
				fetched <- buf.Flags
			}
		},
	}
	c := imapDialTLS(t, n, user, pass, handler)
	if sel := selectBox(t, c, "INBOX", false); sel.NumMessages != 1 {
		t.Fatalf("INBOX has %d messages", sel.NumMessages)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatalf("IDLE: %v", err)
	}
	smtpSend(t, n, "x@remote.example", []string{user}, simpleMessage("x@remote.example", user, "during idle", "two"))
	select {
	case got := <-exists:
		if got != 2 {
			t.Errorf("EXISTS %d during IDLE, want 2", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no EXISTS during IDLE after an SMTP delivery")
	}

	other := imapDialStartTLS(t, n, user, pass, nil)
	selectBox(t, other, "INBOX", false)
	if err := other.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case flags := <-fetched:
		if !slices.Contains(flags, imap.FlagFlagged) {
			t.Errorf("FETCH during IDLE: flags %v, want \\Flagged", flags)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no FETCH FLAGS during IDLE after another session's STORE")
	}
	if err := idle.Close(); err != nil {
		t.Fatalf("DONE: %v", err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatalf("IDLE: %v", err)
	}
	if got := subjects(t, c); !slices.Equal(got, []string{"before idle", "during idle"}) {
		t.Errorf("after IDLE: %q", got)
	}
}
