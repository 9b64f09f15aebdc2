package imap

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/protocols/protocoltest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestViewResync checks that a view told to resynchronise (its watcher
// fell behind) reconciles with the store: EXPUNGE for what vanished,
// EXISTS for what arrived, FETCH for changed flags.
func TestViewResync(t *testing.T) {
	env := protocoltest.NewStore(t)
	env.AddUser(t, testUser, testPassword)
	acct := env.Login(t, testUser, testPassword)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		msg := simpleMessage("s@example.net", testUser, "resync", "Mon, 01 Jan 2024 10:00:00 +0000", "x")
		if err := env.Store.Deliver(ctx, schema.Delivery{Recipients: []string{testUser}, Message: []byte(msg)}); err != nil {
			t.Fatal(err)
		}
	}
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	v, err := openView(ctx, acct, inbox, false)
	if err != nil {
		t.Fatal(err)
	}
	defer v.close()
	// Stand in for the store's channel, as if its events had been lost.
	lost := make(chan schema.Change, 1)
	v.changes = lost

	if _, err := acct.StoreFlags(ctx, inbox.ID, []schema.UID{1}, schema.FlagsAdd, []string{schema.FlagDeleted}); err != nil {
		t.Fatal(err)
	}
	if _, err := acct.Expunge(ctx, inbox.ID, []schema.ExpungeTarget{{UID: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := acct.StoreFlags(ctx, inbox.ID, []schema.UID{2}, schema.FlagsAdd, []string{schema.FlagFlagged}); err != nil {
		t.Fatal(err)
	}
	if _, err := acct.Append(ctx, inbox.ID, []byte("Subject: new\r\n\r\nnew\r\n"), nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	lost <- schema.Change{Kind: schema.ChangeResync}

	r := &recorder{}
	reloadErr, writeErr := v.flush(ctx, r, true, false)
	if reloadErr != nil || writeErr != nil {
		t.Fatalf("flush: %v %v", reloadErr, writeErr)
	}
	if got := strings.Join(r.out, "; "); got != `EXPUNGE 1; EXISTS 3; RECENT 3; FETCH 1 UID 2 [\Flagged \Recent]` {
		t.Errorf("after resync: %s", got)
	}
}

// TestIMAP4rev2Session runs a session that enabled IMAP4rev2: SELECT
// carries the mailbox's LIST data and SEARCH answers with ESEARCH.
func TestIMAP4rev2Session(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 2)
	c := ts.login(t, nil)
	if _, err := c.Enable(imap.CapIMAP4rev2).Wait(); err != nil {
		t.Fatalf("enable: %v", err)
	}
	data := selectMailbox(t, c, "Sent", false)
	if data.List == nil || data.List.Mailbox != "Sent" || !hasAttr(data.List, imap.MailboxAttrSent) {
		t.Errorf("SELECT LIST data %+v", data.List)
	}
	selectMailbox(t, c, "INBOX", false)
	res, err := c.Search(&imap.SearchCriteria{}, nil).Wait()
	if err != nil || len(res.AllSeqNums()) != 2 {
		t.Fatalf("search: %v %v", res, err)
	}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{Envelope: true}).Collect()
	if err != nil || len(msgs) != 2 || msgs[1].Envelope.Subject != "message 2" {
		t.Fatalf("fetch: %v", err)
	}
}
