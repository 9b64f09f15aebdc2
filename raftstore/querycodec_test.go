package raftstore

import (
	"bytes"
	"encoding/gob"
	"errors"
	"reflect"
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func id(b byte) schema.ID { return schema.ID{b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, b} }

// fullResult sets every field of a QueryResult, as no single query does.
func fullResult() *QueryResult {
	return &QueryResult{
		Code:  schema.CodeNoSuchMessage,
		Index: 1<<40 + 7,
		Mailboxes: []schema.MailboxRecord{
			{ID: id(1), NameKey: schema.NameKey{9, 9}, Sealed: []byte("sealed name"), Inbox: true, UIDValidity: 3, UIDNext: 40, HighestModSeq: 1 << 33, Messages: 39, Size: 1 << 20},
			{ID: id(2), Sealed: []byte("another"), UIDValidity: 4, UIDNext: 1},
		},
		Mailbox:  schema.MailboxRecord{ID: id(3), Sealed: []byte("x"), UIDValidity: 5, UIDNext: 2, Messages: 1, Size: 10},
		Messages: []schema.MessageRecord{{UID: 7, ID: id(4), Blob: id(5), Size: 4096, ModSeq: 12, Sealed: []byte("flags")}},
		Blob:     schema.BlobRecord{ID: id(5), Refs: 2, Size: 4096, Chunks: 2},
		Chunks:   [][]byte{bytes.Repeat([]byte{0xAB}, 70_000), {}, []byte("tail")},
		State:    schema.UserState{Inbox: id(3), LastUIDValidity: 5},
		Spooled: []schema.SpoolRecord{{ID: id(6), From: []byte("a@example.org"), Recipients: []schema.SpoolRecipient{{User: id(7), Shard: 3}},
			Size: 100, Chunks: 1, Time: 1_700_000_000_000_000_000, Junk: true}},
		Value:     []byte{0, 0, 0, 9},
		ValueRead: true,
		Outbound:  []schema.OutboundRecord{{ID: id(8), User: id(9), Size: 5, Chunks: 1, Created: 11, NextAttempt: 12, Held: true, Finished: 13, Version: 2, State: []byte("state")}},
	}
}

func TestQueryResultRoundTrip(t *testing.T) {
	for name, want := range map[string]*QueryResult{
		"full":                 fullResult(),
		"empty":                {},
		"empty value":          {Value: []byte{}},
		"claim read, none yet": {ValueRead: true},
		"only chunks":          {Chunks: [][]byte{[]byte("header")}, Index: 3},
	} {
		var got QueryResult
		if err := got.Unmarshal(want.Marshal()); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(&got, want) {
			t.Errorf("%s: decoded\n%+v\nwant\n%+v", name, got, *want)
		}
	}
}

// TestQueryResultCheaperThanGob: the point of the codec.
func TestQueryResultCheaperThanGob(t *testing.T) {
	r := &QueryResult{Index: 9, Messages: fullResult().Messages}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(r); err != nil {
		t.Fatal(err)
	}
	if ours := len(r.Marshal()); ours >= buf.Len() {
		t.Errorf("%d bytes encoded, gob takes %d", ours, buf.Len())
	}
}

func TestQueryResultRejectsDamage(t *testing.T) {
	b := fullResult().Marshal()
	for _, bad := range [][]byte{nil, {2}, b[:len(b)-1], append(bytes.Clone(b), 0), {queryResultVersion, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}} {
		var r QueryResult
		if err := r.Unmarshal(bad); !errors.Is(err, errMalformed) {
			t.Errorf("Unmarshal(%d bytes) = %v, want a malformed result", len(bad), err)
		}
	}
}

// FuzzQueryResult: no input makes Unmarshal panic, and whatever it
// accepts encodes to the same bytes again.
func FuzzQueryResult(f *testing.F) {
	f.Add(fullResult().Marshal())
	f.Add((&QueryResult{}).Marshal())
	f.Add((&QueryResult{Value: []byte{}, Chunks: [][]byte{nil}}).Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		var r QueryResult
		if r.Unmarshal(b) != nil {
			return
		}
		var again QueryResult
		if err := again.Unmarshal(r.Marshal()); err != nil {
			t.Fatalf("re-encoded result does not decode: %v", err)
		}
		if !reflect.DeepEqual(r, again) {
			t.Fatalf("re-encoded result differs:\n%+v\n%+v", r, again)
		}
	})
}

func fullQuery() *Query {
	return &Query{Kind: QuerySearchRecords, User: id(1), Mailbox: id(2), NameKey: schema.NameKey{7, 7, 7}, Blob: id(3),
		UIDs: []schema.UID{1, 2, 1<<32 - 1}, Name: "subscriptions", Blobs: []schema.ID{id(4), id(5)}}
}

func TestQueryRoundTrip(t *testing.T) {
	for name, want := range map[string]*Query{
		"full":  fullQuery(),
		"empty": {},
		"kind":  {Kind: QueryBody, User: id(9), Blob: id(8)},
	} {
		var got Query
		if err := got.Unmarshal(want.Marshal()); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(&got, want) {
			t.Errorf("%s: decoded\n%+v\nwant\n%+v", name, got, *want)
		}
	}
	b := fullQuery().Marshal()
	for _, bad := range [][]byte{nil, {9}, b[:len(b)-1], append(bytes.Clone(b), 0)} {
		var q Query
		if err := q.Unmarshal(bad); !errors.Is(err, errMalformed) {
			t.Errorf("Unmarshal(%d bytes) = %v, want a malformed query", len(bad), err)
		}
	}
}

// FuzzQuery: no input makes Unmarshal panic, and whatever it accepts
// encodes and decodes to the same query.
func FuzzQuery(f *testing.F) {
	f.Add(fullQuery().Marshal())
	f.Add((&Query{}).Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		var q Query
		if q.Unmarshal(b) != nil {
			return
		}
		var again Query
		if err := again.Unmarshal(q.Marshal()); err != nil {
			t.Fatalf("re-encoded query does not decode: %v", err)
		}
		if !reflect.DeepEqual(q, again) {
			t.Fatalf("re-encoded query differs:\n%+v\n%+v", q, again)
		}
	})
}
