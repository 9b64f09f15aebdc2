package raftstore

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// BenchmarkRequestTableWrites measures the state file's page writes per
// entry once the request table is full (maxRequestIDs ids, so that each
// entry adds an id and removes the oldest), for request ids made at
// random (schema.NewID, and ids derived from a delivery's fingerprint)
// and in sequence (schema.NewRequestID). Each operation is one commit
// of eight entries for random users among 40: appends of a 3,000-byte
// message and flag changes, half each. Run it with
//
//	go test -run '^$' -bench RequestTableWrites ./raftstore/
func BenchmarkRequestTableWrites(b *testing.B) {
	for _, c := range []struct {
		name  string
		newID func() schema.ID
	}{{"random", schema.NewID}, {"sequence", schema.NewRequestID}} {
		b.Run(c.name, func(b *testing.B) {
			f := leaderFSM(b, false)
			index := uint64(1)
			commit := func(ps ...schema.Payload) {
				logs := make([]*raft.Log, len(ps))
				for i, p := range ps {
					cmd := schema.Command{ReqID: c.newID(), Time: time.Now().UnixNano(), Payload: p}
					logs[i] = &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: schema.EncodeCommand(cmd)}
					index++
				}
				for _, r := range f.ApplyBatch(logs) {
					if err, ok := r.(error); ok {
						b.Fatal(err)
					}
				}
			}
			type user struct{ id, inbox schema.ID }
			users := make([]user, 40)
			body := make([]byte, 3000)
			appendTo := func(u user) schema.Payload {
				return &schema.Append{User: u.id, Mailbox: u.inbox, Message: schema.NewID(), Blob: schema.NewID(),
					Size: uint64(len(body)), Sealed: []byte("attrs"), Chunks: [][]byte{body}}
			}
			for i := range users {
				users[i] = user{schema.NewID(), schema.NewID()}
				commit(&schema.InitUser{User: users[i].id, Mailboxes: []schema.NewMailbox{
					{ID: users[i].inbox, NameKey: nameKey("INBOX"), Sealed: []byte("inbox"), Inbox: true}}})
			}
			const messages = 20
			for range messages {
				ps := make([]schema.Payload, len(users))
				for i, u := range users {
					ps[i] = appendTo(u)
				}
				commit(ps...)
			}
			// Fill the table with refused flag changes (a UID no one has):
			// every applied request is remembered, refused or not.
			for n := 0; n < maxRequestIDs; n += 1000 {
				ps := make([]schema.Payload, 1000)
				for i := range ps {
					ps[i] = &schema.SetAttrs{User: users[0].id, Mailbox: users[0].inbox,
						Updates: []schema.AttrUpdate{{UID: 1 << 30, Sealed: []byte("flags")}}}
				}
				commit(ps...)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			const perCommit = 8
			before := f.db.Stats().TxStats
			b.ResetTimer()
			for range b.N {
				ps := make([]schema.Payload, perCommit)
				for i := range ps {
					u := users[rng.IntN(len(users))]
					if i%2 == 0 {
						ps[i] = appendTo(u)
					} else {
						ps[i] = &schema.SetAttrs{User: u.id, Mailbox: u.inbox,
							Updates: []schema.AttrUpdate{{UID: schema.UID(1 + rng.IntN(messages)), Sealed: []byte("flags")}}}
					}
				}
				commit(ps...)
			}
			b.StopTimer()
			after := f.db.Stats().TxStats
			d := after.Sub(&before)
			b.ReportMetric(float64(d.GetWrite())/float64(b.N*perCommit), "writes/entry")
			b.ReportMetric(float64(d.GetPageCount())/float64(b.N*perCommit), "pages/entry")
		})
	}
}
