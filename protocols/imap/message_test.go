package imap

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailcluster/mailcluster/protocols"
)

// deliverN delivers n numbered messages.
func deliverN(t *testing.T, ts *testServer, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		ts.deliver(t, simpleMessage("sender@example.net", testUser, fmt.Sprintf("message %d", i),
			"Mon, 01 Jan 2024 10:00:00 +0000", fmt.Sprintf("body of message %d", i)))
	}
}

// expungeLog records unilateral EXPUNGE responses.
type expungeLog struct {
	mu   sync.Mutex
	seqs []uint32
}

func (l *expungeLog) handler() *imapclient.UnilateralDataHandler {
	return &imapclient.UnilateralDataHandler{Expunge: func(seq uint32) {
		l.mu.Lock()
		l.seqs = append(l.seqs, seq)
		l.mu.Unlock()
	}}
}

func (l *expungeLog) take() []uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.seqs
	l.seqs = nil
	return out
}

func uidsOf(t *testing.T, c *imapclient.Client) []imap.UID {
	t.Helper()
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true}).Collect()
	if err != nil {
		t.Fatalf("fetch uids: %v", err)
	}
	out := make([]imap.UID, len(msgs))
	for i, m := range msgs {
		out[i] = m.UID
	}
	return out
}

func TestStore(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 3)
	c := ts.login(t, nil)
	selectMailbox(t, c, "INBOX", false)

	store := func(set imap.NumSet, op imap.StoreFlagsOp, silent bool, flags ...imap.Flag) []*imapclient.FetchMessageBuffer {
		t.Helper()
		msgs, err := c.Store(set, &imap.StoreFlags{Op: op, Silent: silent, Flags: flags}, nil).Collect()
		if err != nil {
			t.Fatalf("store: %v", err)
		}
		return msgs
	}
	flagsOf := func(seq uint32) []imap.Flag {
		t.Helper()
		return fetchOne(t, c, imap.SeqSetNum(seq), &imap.FetchOptions{Flags: true}).Flags
	}

	got := store(imap.SeqSet{{Start: 1, Stop: 2}}, imap.StoreFlagsAdd, false, imap.FlagFlagged, "$Work")
	if len(got) != 2 || !hasFlag(got[0].Flags, imap.FlagFlagged) || !hasFlag(got[1].Flags, "$Work") {
		t.Fatalf("+FLAGS responses %+v", got)
	}
	got = store(imap.SeqSetNum(1), imap.StoreFlagsDel, false, "$work")
	if len(got) != 1 || hasFlag(got[0].Flags, "$Work") || !hasFlag(got[0].Flags, imap.FlagFlagged) {
		t.Fatalf("-FLAGS response %+v", got)
	}
	got = store(imap.SeqSetNum(2), imap.StoreFlagsSet, true, imap.FlagAnswered)
	if len(got) != 0 {
		t.Errorf(".SILENT answered with %d FETCH responses", len(got))
	}
	if f := flagsOf(2); len(f) != 2 || !hasFlag(f, imap.FlagAnswered) || !hasFlag(f, `\Recent`) {
		t.Errorf("FLAGS after set: %v", f)
	}
	store(imap.SeqSetNum(3), imap.StoreFlagsAdd, true, "$Work")
	got = store(imap.UIDSetNum(3), imap.StoreFlagsSet, false, imap.FlagSeen, `\recent`, "$Work")
	// \Recent cannot be stored, but the message is recent in this session.
	if len(got) != 1 || got[0].UID != 3 || len(got[0].Flags) != 3 || !hasFlag(got[0].Flags, imap.FlagSeen) || !hasFlag(got[0].Flags, `\Recent`) {
		t.Errorf("UID STORE response %+v", got)
	}
	if _, err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{`\Bogus`}}, nil).Collect(); err == nil {
		t.Error("storing an unknown system flag succeeded")
	}
	data := selectMailbox(t, c, "INBOX", false)
	if !hasFlag(data.Flags, "$Work") {
		t.Errorf("FLAGS on select lacks keyword in use: %v", data.Flags)
	}
	if !hasFlag(data.PermanentFlags, imap.FlagWildcard) {
		t.Errorf("PERMANENTFLAGS lacks \\*: %v", data.PermanentFlags)
	}
}

func TestCopyAndMove(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 4)
	log := &expungeLog{}
	c := ts.login(t, log.handler())
	selectMailbox(t, c, "INBOX", false)

	data, err := c.Copy(imap.SeqSet{{Start: 2, Stop: 3}}, "Archive").Wait()
	if err != nil {
		t.Fatalf("copy: %v", err)
	}
	if data.UIDValidity == 0 || data.SourceUIDs.String() != "2:3" || data.DestUIDs.String() != "1:2" {
		t.Errorf("COPYUID %d %s %s", data.UIDValidity, data.SourceUIDs, data.DestUIDs)
	}
	if _, err := c.Copy(imap.SeqSetNum(1), "Nowhere").Wait(); imapCode(err) != imap.ResponseCodeTryCreate {
		t.Errorf("copy to missing mailbox: got %v, want TRYCREATE", err)
	}
	st, err := c.Status("Archive", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 2 {
		t.Fatalf("archive after copy: %v %v", st, err)
	}

	moved, err := c.Move(imap.UIDSet{{Start: 1, Stop: 1}, {Start: 4, Stop: 4}}, "Trash").Wait()
	if err != nil {
		t.Fatalf("move: %v", err)
	}
	if moved.UIDValidity == 0 || moved.SourceUIDs.String() != "1,4" || moved.DestUIDs.String() != "1:2" {
		t.Errorf("MOVE COPYUID %d %v %v", moved.UIDValidity, moved.SourceUIDs, moved.DestUIDs)
	}
	// UID 1 is sequence 1; after its EXPUNGE, UID 4 is sequence 3.
	if seqs := log.take(); fmt.Sprint(seqs) != "[1 3]" {
		t.Errorf("EXPUNGE responses for MOVE: %v", seqs)
	}
	if uids := uidsOf(t, c); fmt.Sprint(uids) != "[2 3]" {
		t.Errorf("INBOX after move: %v", uids)
	}
	if _, err := c.Move(imap.SeqSetNum(1), "Nowhere").Wait(); imapCode(err) != imap.ResponseCodeTryCreate {
		t.Errorf("move to missing mailbox: got %v, want TRYCREATE", err)
	}
	st, err = c.Status("Trash", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 2 {
		t.Fatalf("trash after move: %v %v", st, err)
	}
}

func TestExpunge(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 5)
	c := ts.login(t, nil)
	selectMailbox(t, c, "INBOX", false)
	mark := func(set imap.NumSet) {
		t.Helper()
		if _, err := c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
			t.Fatal(err)
		}
	}

	// Nothing is \Deleted yet.
	if seqs, err := c.Expunge().Collect(); err != nil || len(seqs) != 0 {
		t.Fatalf("expunge with nothing deleted: %v %v", seqs, err)
	}
	mark(imap.SeqSet{{Start: 2, Stop: 4}})
	// UID EXPUNGE only touches the given UIDs.
	seqs, err := c.UIDExpunge(imap.UIDSetNum(3)).Collect()
	if err != nil || fmt.Sprint(seqs) != "[3]" {
		t.Fatalf("UID EXPUNGE 3: %v %v", seqs, err)
	}
	seqs, err = c.Expunge().Collect()
	if err != nil || fmt.Sprint(seqs) != "[2 2]" {
		t.Fatalf("EXPUNGE: %v %v", seqs, err)
	}
	if uids := uidsOf(t, c); fmt.Sprint(uids) != "[1 5]" {
		t.Fatalf("left: %v", uids)
	}

	// CLOSE expunges silently; EXAMINE + CLOSE does not.
	mark(imap.SeqSetNum(1))
	selectMailbox(t, c, "INBOX", true)
	if err := c.Unselect().Wait(); err != nil {
		t.Fatal(err)
	}
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("EXAMINE INBOX")
	if untagged := rc.mustOK("CLOSE"); len(untagged) != 0 {
		t.Errorf("CLOSE on EXAMINE wrote %q", untagged)
	}
	st, _ := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
	if *st.NumMessages != 2 {
		t.Fatalf("EXAMINE+CLOSE expunged: %d left", *st.NumMessages)
	}
	rc.mustOK("SELECT INBOX")
	if untagged := rc.mustOK("CLOSE"); len(untagged) != 0 {
		t.Errorf("CLOSE wrote %q", untagged)
	}
	st, _ = c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
	if *st.NumMessages != 1 {
		t.Fatalf("after CLOSE: %d left, want 1", *st.NumMessages)
	}
}

func TestAppend(t *testing.T) {
	ts := newTestServer(t, withMaxMessageSize(4096))
	c := ts.login(t, nil)
	msg := simpleMessage("me@example.org", "you@example.net", "draft", "Mon, 01 Jan 2024 10:00:00 +0000", "draft body")
	date := time.Date(2023, 5, 6, 7, 8, 9, 0, time.FixedZone("", 2*3600))
	appendMsg := func(mailbox, body string, opts *imap.AppendOptions) (*imap.AppendData, error) {
		cmd := c.Append(mailbox, int64(len(body)), opts)
		if _, err := cmd.Write([]byte(body)); err != nil {
			return nil, err
		}
		if err := cmd.Close(); err != nil {
			return nil, err
		}
		return cmd.Wait()
	}

	data, err := appendMsg("Drafts", msg, &imap.AppendOptions{Flags: []imap.Flag{imap.FlagDraft, imap.FlagSeen, "$Label"}, Time: date})
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	if data.UID != 1 || data.UIDValidity == 0 {
		t.Errorf("APPENDUID %+v", data)
	}
	sd := selectMailbox(t, c, "Drafts", false)
	if sd.UIDValidity != data.UIDValidity || sd.NumMessages != 1 {
		t.Errorf("select after append: %+v", sd)
	}
	sec := &imap.FetchItemBodySection{Peek: true}
	m := fetchOne(t, c, imap.SeqSetNum(1), &imap.FetchOptions{Flags: true, InternalDate: true, BodySection: []*imap.FetchItemBodySection{sec}})
	if !m.InternalDate.Equal(date) || len(m.Flags) != 4 || !hasFlag(m.Flags, "$label") || !hasFlag(m.Flags, `\Recent`) || string(m.FindBodySection(sec)) != msg {
		t.Errorf("appended message: date %v flags %v body %q", m.InternalDate, m.Flags, m.FindBodySection(sec))
	}

	// Appending to the selected mailbox announces the message.
	data, err = appendMsg("Drafts", msg, nil)
	if err != nil || data.UID != 2 {
		t.Fatalf("second append: %+v %v", data, err)
	}
	if n := c.Mailbox().NumMessages; n != 2 {
		t.Errorf("EXISTS after append to selected mailbox: %d", n)
	}

	if _, err := appendMsg("Nowhere", msg, nil); imapCode(err) != imap.ResponseCodeTryCreate {
		t.Errorf("append to missing mailbox: got %v, want TRYCREATE", err)
	}
	// A message delivery accepted at the size limit, with the trace
	// header fields delivery added, can be uploaded again.
	delivered := "Return-Path: <a@example.net>\r\nReceived: from x\r\n" + msg + strings.Repeat("x", 4096-len(msg)) + "\r\n"
	if _, err := appendMsg("Drafts", delivered, nil); err != nil {
		t.Errorf("append of a delivered message of %d bytes (limit 4096): %v", len(delivered), err)
	}
	// Over the limit: refused before the literal is accepted, and the
	// connection goes on. (Checked by hand: the client library cannot
	// recover from a refused literal.)
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	if caps := strings.Join(rc.mustOK("CAPABILITY"), " "); !strings.Contains(caps, fmt.Sprintf("APPENDLIMIT=%d", 4096+protocols.TraceHeadroom)) {
		t.Errorf("capabilities %q, want APPENDLIMIT of the limit plus the trace headroom", caps)
	}
	_, status := rc.cmd(fmt.Sprintf("APPEND Drafts {%d}", 4096+protocols.TraceHeadroom+1))
	if !strings.HasPrefix(status, "NO [TOOBIG]") {
		t.Errorf("append over the limit: %s, want NO [TOOBIG]", status)
	}
	rc.mustOK("NOOP")
	st, err := c.Status("Drafts", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 3 {
		t.Errorf("Drafts after refused append: %v %v", st, err)
	}
}
