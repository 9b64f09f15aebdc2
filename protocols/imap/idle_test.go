package imap

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// updates records the unilateral data a client receives.
type updates struct {
	mu       sync.Mutex
	exists   []uint32
	expunges []uint32
	fetches  []string // "seq:flags"
	signal   chan struct{}
}

func newUpdates() *updates { return &updates{signal: make(chan struct{}, 100)} }

func (u *updates) handler() *imapclient.UnilateralDataHandler {
	notify := func() {
		select {
		case u.signal <- struct{}{}:
		default:
		}
	}
	return &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				u.mu.Lock()
				u.exists = append(u.exists, *d.NumMessages)
				u.mu.Unlock()
				notify()
			}
		},
		Expunge: func(seq uint32) {
			u.mu.Lock()
			u.expunges = append(u.expunges, seq)
			u.mu.Unlock()
			notify()
		},
		Fetch: func(msg *imapclient.FetchMessageData) {
			buf, err := msg.Collect()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.fetches = append(u.fetches, fmt.Sprintf("%d:%v", buf.SeqNum, buf.Flags))
			u.mu.Unlock()
			notify()
		},
	}
}

// take returns and clears what was recorded.
func (u *updates) take() (exists, expunges []uint32, fetches []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	exists, expunges, fetches = u.exists, u.expunges, u.fetches
	u.exists, u.expunges, u.fetches = nil, nil, nil
	return
}

// waitUntil waits, without sleeping, until cond holds on the recorded
// updates.
func (u *updates) waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		u.mu.Lock()
		ok := cond()
		u.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-u.signal:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestIdle(t *testing.T) {
	ts := newTestServer(t)
	up := newUpdates()
	c := ts.login(t, up.handler())
	if data := selectMailbox(t, c, "INBOX", false); data.NumMessages != 0 {
		t.Fatalf("INBOX not empty: %d", data.NumMessages)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatalf("idle: %v", err)
	}

	// A message delivered through the store from another goroutine shows
	// up in the idling session.
	delivered := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		delivered <- ts.env.Store.Deliver(ctx, schema.Delivery{
			From: "sender@example.net", Recipients: []string{testUser},
			Message: []byte(simpleMessage("sender@example.net", testUser, "while idling", "Mon, 01 Jan 2024 10:00:00 +0000", "ping")),
		})
	}()
	if err := <-delivered; err != nil {
		t.Fatalf("deliver: %v", err)
	}
	up.waitUntil(t, "EXISTS 1 during IDLE", func() bool { return len(up.exists) > 0 && up.exists[len(up.exists)-1] == 1 })

	// Flag changes and expunges by another session arrive too.
	other := ts.login(t, nil)
	selectMailbox(t, other, "INBOX", false)
	if _, err := other.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	up.waitUntil(t, "FETCH FLAGS during IDLE", func() bool { return len(up.fetches) > 0 })
	if err := other.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	up.waitUntil(t, "EXPUNGE during IDLE", func() bool { return len(up.expunges) > 0 })

	if err := idle.Close(); err != nil {
		t.Fatalf("idle close: %v", err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatalf("idle: %v", err)
	}
	_, expunges, fetches := up.take()
	if fmt.Sprint(expunges) != "[1]" || len(fetches) != 1 || fetches[0] != `1:[\Deleted \Recent]` {
		t.Errorf("expunges %v fetches %v", expunges, fetches)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatalf("noop after idle: %v", err)
	}
	if n := c.Mailbox().NumMessages; n != 0 {
		t.Errorf("client thinks %d messages remain", n)
	}
}

func TestIdleWithoutSelection(t *testing.T) {
	ts := newTestServer(t)
	c := ts.login(t, nil)
	idle, err := c.Idle()
	if err != nil {
		t.Fatalf("idle: %v", err)
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestTwoSessions(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 3)
	a := ts.login(t, nil)
	upB := newUpdates()
	b := ts.login(t, upB.handler())
	selectMailbox(t, a, "INBOX", false)
	selectMailbox(t, b, "INBOX", false)

	// A's flag change reaches B at B's next command.
	if _, err := a.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	if err := b.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	// The client library runs the FETCH handler on its own goroutine.
	upB.waitUntil(t, "B's FETCH update", func() bool { return len(upB.fetches) > 0 })
	if _, _, fetches := upB.take(); fmt.Sprint(fetches) != `[2:[\Flagged]]` {
		t.Errorf("B's updates after A's STORE: %v", fetches)
	}

	// A session's own STORE is reported once, not again as an update.
	// (Checked on the wire: the client library delivers FETCH updates
	// asynchronously, so it cannot show that one did not come.)
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("SELECT INBOX")
	if got := rc.mustOK(`STORE 3 +FLAGS (\Seen)`); len(got) != 1 || !strings.HasPrefix(got[0], "* 3 FETCH") {
		t.Errorf("STORE responses %q", got)
	}
	if got := rc.mustOK("NOOP"); len(got) != 0 {
		t.Errorf("own change echoed at NOOP: %q", got)
	}
	if got := rc.mustOK(`STORE 3 +FLAGS.SILENT (\Answered)`); len(got) != 0 {
		t.Errorf("STORE .SILENT responses %q", got)
	}
	if got := rc.mustOK("NOOP"); len(got) != 0 {
		t.Errorf("own silent change echoed at NOOP: %q", got)
	}
	if err := b.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	upB.waitUntil(t, "B's FETCH for message 3", func() bool { return len(upB.fetches) > 0 })
	if _, _, fetches := upB.take(); fmt.Sprint(fetches) != `[3:[\Seen \Answered]]` {
		t.Errorf("B's updates after the other session's STOREs: %v", fetches)
	}

	// A expunges message 1. B, in a FETCH, must not be told (sequence
	// numbers may not shift under a FETCH), and does not get the gone
	// message; at NOOP the EXPUNGE arrives.
	if _, err := a.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	if seqs, err := a.Expunge().Collect(); err != nil || fmt.Sprint(seqs) != "[1]" {
		t.Fatalf("A's expunge: %v %v", seqs, err)
	}
	msgs, err := b.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, m := range msgs {
		seen = append(seen, fmt.Sprintf("%d/%d", m.SeqNum, m.UID))
	}
	if fmt.Sprint(seen) != "[2/2 3/3]" {
		t.Errorf("B's FETCH during pending expunge: %v", seen)
	}
	if _, expunges, _ := upB.take(); len(expunges) != 0 {
		t.Errorf("EXPUNGE sent during FETCH: %v", expunges)
	}
	if err := b.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if _, expunges, _ := upB.take(); fmt.Sprint(expunges) != "[1]" {
		t.Errorf("B's EXPUNGE at NOOP: %v", expunges)
	}

	// A new message appended by A is announced to B with EXISTS.
	body := simpleMessage("x@example.net", testUser, "fresh", "Mon, 01 Jan 2024 10:00:00 +0000", "new")
	cmd := a.Append("INBOX", int64(len(body)), nil)
	cmd.Write([]byte(body))
	cmd.Close()
	if _, err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := b.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if exists, _, _ := upB.take(); fmt.Sprint(exists) != "[3]" {
		t.Errorf("B's EXISTS after A's APPEND: %v", exists)
	}
	if uids := uidsOf(t, b); fmt.Sprint(uids) != "[2 3 4]" {
		t.Errorf("B's view: %v", uids)
	}

	// B marks 2 deleted; A undeletes it; B's EXPUNGE decided on fresh
	// state leaves it alone.
	if _, err := b.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsDel, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	if seqs, err := b.Expunge().Collect(); err != nil || len(seqs) != 0 {
		t.Errorf("B expunged an undeleted message: %v %v", seqs, err)
	}
}

func TestSelectedMailboxDeleted(t *testing.T) {
	ts := newTestServer(t)
	a := ts.login(t, nil)
	if err := a.Create("Temp", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	body := simpleMessage("x@example.net", testUser, "temp", "Mon, 01 Jan 2024 10:00:00 +0000", "t")
	cmd := a.Append("Temp", int64(len(body)), nil)
	cmd.Write([]byte(body))
	cmd.Close()
	if _, err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	up := newUpdates()
	b := ts.login(t, up.handler())
	selectMailbox(t, b, "Temp", false)
	if err := a.Delete("Temp").Wait(); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if err := b.Noop().Wait(); err != nil {
		t.Fatalf("noop: %v", err)
	}
	if _, expunges, _ := up.take(); fmt.Sprint(expunges) != "[1]" {
		t.Errorf("expunges after the selected mailbox was deleted: %v", expunges)
	}
	if _, err := b.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}}, nil).Collect(); err == nil {
		t.Error("STORE in a deleted mailbox succeeded")
	}
}
