package schema

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func sampleCommands() []Command {
	id := func(b byte) ID { var i ID; i[0] = b; return i }
	nk := NameKey{1, 2, 3}
	return []Command{
		{ReqID: id(1), Time: 1700000000000000000, Payload: &PutDomain{Record: DomainRecord{ID: id(2), NameKey: nk, Sealed: []byte("s"), WrappedKey: []byte("k")}}},
		{Payload: &DeleteDomain{Domain: id(3)}},
		{Payload: &PutUser{Record: UserRecord{ID: id(4), NameKey: nk, Domain: id(2), Shard: 7, Sealed: []byte("u"), WrappedKey: []byte("w")}, Create: true}},
		{Payload: &DeleteUser{User: id(4)}},
		{Payload: &PutSetting{Key: "k", Value: []byte("v")}},
		{Payload: &PutSettings{Settings: []PutSetting{{Key: "a", Value: []byte("1")}, {Key: "b"}, {Key: "c", Value: []byte("33")}}}},
		{Payload: &InitUser{User: id(5), Mailboxes: []NewMailbox{{ID: id(6), NameKey: nk, Sealed: []byte("m"), Inbox: true}}}},
		{Payload: &DeleteUserData{User: id(5)}},
		{Payload: &CreateMailbox{User: id(5), Mailbox: NewMailbox{ID: id(7), NameKey: nk, Sealed: []byte("c")}}},
		{Payload: &DeleteMailbox{User: id(5), Mailbox: id(7)}},
		{Payload: &RenameMailbox{User: id(5), Renames: []MailboxRename{{Mailbox: id(7), NameKey: nk, Sealed: []byte("r")}}}},
		{Payload: &UpdateMailbox{User: id(5), Mailbox: id(7), Sealed: []byte("x")}},
		{Payload: &StageChunk{User: id(5), Blob: id(8), Index: 3, Sealed: []byte("chunk")}},
		{Payload: &RepairBlob{User: id(5), Blob: id(8), Index: 2, Sealed: []byte("chunk")}},
		{Payload: &RepairBlob{User: id(5), Blob: id(8), SearchRecord: true, Sealed: []byte("record")}},
		{Payload: &RepairRecord{User: id(5), Mailbox: id(7), UID: 4, Damaged: []byte("hash"), Sealed: []byte("attrs")}},
		{Payload: &RepairRecord{User: id(5), Mailbox: id(7), Damaged: []byte("hash"), Sealed: []byte("mailbox")}},
		{Payload: &RepairOutbound{ID: id(11), Part: 2, Damaged: []byte("hash"), Sealed: []byte("chunk")}},
		{Time: -5, Payload: &Append{User: id(5), Mailbox: id(7), Message: id(9), Blob: id(8), Size: 1234, Sealed: []byte("a"), StagedChunks: 2, Chunks: [][]byte{[]byte("c1"), []byte("c2")}}},
		{Payload: &SetAttrs{User: id(5), Mailbox: id(7), Updates: []AttrUpdate{{UID: 4, ExpectModSeq: 9, Sealed: []byte("f")}}}},
		{Payload: &Copy{User: id(5), Source: id(7), Dest: id(6), Move: true, Items: []CopyItem{{UID: 1, Message: id(10), Sealed: []byte("s")}}}},
		{Payload: &Expunge{User: id(5), Mailbox: id(7), Targets: []ExpungeTarget{{UID: 1, ModSeq: 2}, {UID: 3}}}},
		{Payload: &ExpireStaged{Before: 99}},
		{Payload: &SwapSetting{Key: "node/n1", Old: []byte("o"), New: []byte("n")}},
		{Payload: &SwapSetting{Key: "token/x", OldAbsent: true, New: []byte{}}},
		{Payload: &SwapSetting{Key: "token/y", Old: []byte("o")}},
		{Payload: &Lease{Key: "pop3/u", Holder: id(11), TTL: 30e9, Release: true}},
		{Payload: &Spool{ID: id(12), From: []byte("f"), Recipients: []SpoolRecipient{{User: id(4), Shard: 2}, {User: id(5), Shard: 3}},
			Size: 99, StagedChunks: 1, Chunks: [][]byte{[]byte("c")}}},
		{Payload: &Spool{ID: id(13), From: []byte("f"), Recipients: []SpoolRecipient{{User: id(4), Shard: 2}}, Size: 9, Chunks: [][]byte{[]byte("d")}, Junk: true}},
		{Payload: &SpoolDone{ID: id(12), Users: []ID{id(4)}}},
		{Payload: &SwapUserValue{User: id(5), Scope: id(7), Name: "recent", Old: []byte{0, 0, 0, 9}, New: []byte{0, 0, 0, 12}}},
		{Payload: &SwapUserValue{User: id(5), Name: "subscriptions", OldAbsent: true, New: []byte{}}},
		{Payload: &SwapUserValue{User: id(5), Name: "subscriptions", Old: []byte("s")}},
		{Time: 7, Payload: &Enqueue{ID: id(14), User: id(5), Size: 42, StagedChunks: 1, Chunks: [][]byte{[]byte("h"), []byte("b")}, State: []byte("st"), NextAttempt: 8}},
		{Payload: &UpdateOutbound{ID: id(14), Version: 3, NextAttempt: 9, Held: true, Finished: 10, State: []byte("s2")}},
		{Payload: &DeleteOutbound{ID: id(14)}},
		{Payload: &Append{User: id(5), Mailbox: id(7), Message: id(9), Blob: id(8), Size: 3, Sealed: []byte("a"), Chunks: [][]byte{[]byte("c")}, Quota: 1 << 30}},
		{Payload: &Append{User: id(5), Mailbox: id(7), Message: id(9), Blob: id(8), Size: 3, Sealed: []byte("a"), Chunks: [][]byte{[]byte("c")}, MessageQuota: 9}},
		{Payload: &Copy{User: id(5), Source: id(7), Dest: id(6), Items: []CopyItem{{UID: 1, Message: id(10), Sealed: []byte("s")}}, Quota: 5, MessageQuota: 6}},
		{Payload: &AppendBatch{User: id(5), Mailbox: id(7), Quota: 7, MessageQuota: 8, Items: []Append{
			{User: id(5), Mailbox: id(7), Message: id(9), Blob: id(8), Size: 3, Sealed: []byte("a"), Chunks: [][]byte{[]byte("c")}},
			{User: id(5), Mailbox: id(7), Message: id(10), Blob: id(11), Size: 9, Sealed: []byte("b"), StagedChunks: 2, Chunks: [][]byte{}},
		}}},
		{Payload: &Append{User: id(5), Mailbox: id(7), Message: id(9), Blob: id(8), Size: 3, Sealed: []byte("a"), Chunks: [][]byte{[]byte("c")}, SearchRecord: []byte("rec")}},
		{Payload: &Append{User: id(5), Mailbox: id(7), Message: id(9), Blob: id(8), Size: 3, Sealed: []byte("a"), Chunks: [][]byte{[]byte("c")}, Quota: 4, SearchRecord: []byte("rec")}},
		{Payload: &Append{User: id(5), Mailbox: id(7), Message: id(9), Blob: id(8), Size: 3, Sealed: []byte("a"), Chunks: [][]byte{[]byte("c")}, ClaimRecent: true}},
		{Payload: &Append{User: id(5), Mailbox: id(7), Message: id(9), Blob: id(8), Size: 3, Sealed: []byte("a"), Chunks: [][]byte{[]byte("c")}, MessageQuota: 2, SearchRecord: []byte("rec"), ClaimRecent: true}},
		{Payload: &AppendBatch{User: id(5), Mailbox: id(7), Items: []Append{
			{User: id(5), Mailbox: id(7), Message: id(9), Blob: id(8), Size: 3, Sealed: []byte("a"), Chunks: [][]byte{[]byte("c")}, SearchRecord: []byte("r1")},
			{User: id(5), Mailbox: id(7), Message: id(10), Blob: id(11), Size: 9, Sealed: []byte("b"), Chunks: [][]byte{[]byte("d")}},
		}}},
	}
}

// TestSearchRecordKeepsOldForm checks that commands without a search
// record encode as they did before records existed, so replicas and
// entries of either age read each other.
func TestSearchRecordKeepsOldForm(t *testing.T) {
	app := &Append{Message: ID{1}, Blob: ID{2}, Size: 3, Sealed: []byte("a"), Chunks: [][]byte{[]byte("c")}, Quota: 5}
	old := EncodeCommand(Command{Payload: app})
	app.SearchRecord = []byte("record")
	with := EncodeCommand(Command{Payload: app})
	if len(with) <= len(old) || string(with[:len(old)]) != string(old) {
		t.Fatalf("a record changes the bytes before it: %x vs %x", old, with)
	}
	got, err := DecodeCommand(old)
	if err != nil || got.Payload.(*Append).SearchRecord != nil || got.Payload.(*Append).Quota != 5 {
		t.Fatalf("old form decodes as %+v, %v", got.Payload, err)
	}
}

// TestClaimRecentKeepsOldForm checks that an Append without a claim
// encodes as before claims existed, and that the claim only adds bytes
// at the end.
func TestClaimRecentKeepsOldForm(t *testing.T) {
	for _, rec := range [][]byte{nil, []byte("record")} {
		app := &Append{Message: ID{1}, Blob: ID{2}, Size: 3, Sealed: []byte("a"), Chunks: [][]byte{[]byte("c")}, Quota: 5, SearchRecord: rec}
		old := EncodeCommand(Command{Payload: app})
		app.ClaimRecent = true
		with := EncodeCommand(Command{Payload: app})
		if rec != nil && !bytes.HasPrefix(with, old) || len(with) <= len(old) {
			t.Fatalf("record %q: the claim changes the bytes before it: %x vs %x", rec, old, with)
		}
		got, err := DecodeCommand(with)
		if err != nil || !got.Payload.(*Append).ClaimRecent || !bytes.Equal(got.Payload.(*Append).SearchRecord, rec) {
			t.Fatalf("record %q: decodes as %+v, %v", rec, got.Payload, err)
		}
	}
}

// TestLevel checks the level each form needs: a proposer must not write
// a form above the level every node applies.
func TestLevel(t *testing.T) {
	app := func(rec []byte, claim bool) *Append {
		return &Append{Message: ID{1}, Blob: ID{2}, SearchRecord: rec, ClaimRecent: claim}
	}
	for _, c := range []struct {
		p    Payload
		want int
	}{
		{app(nil, false), LevelBase},
		{app([]byte("r"), false), LevelSearchRecords},
		{app(nil, true), LevelAppendClaimsRecent},
		{app([]byte("r"), true), LevelAppendClaimsRecent},
		{&AppendBatch{Items: []Append{*app(nil, false), *app(nil, false)}}, LevelBase},
		{&AppendBatch{Items: []Append{*app(nil, false), *app([]byte("r"), false)}}, LevelSearchRecords},
		{&SetAttrs{}, LevelBase},
		{&RepairBlob{}, LevelRepairBlob},
		{&RepairRecord{}, LevelRepairRecord},
		{&RepairOutbound{}, LevelRepairRecord},
	} {
		if got := Level(c.p); got != c.want {
			t.Errorf("%s %+v: level %d, want %d", c.p.Op(), c.p, got, c.want)
		}
	}
	if CommandLevel < LevelRepairRecord {
		t.Errorf("CommandLevel %d is below a level this software writes", CommandLevel)
	}
}

func TestCommandRoundTrip(t *testing.T) {
	seen := map[Op]bool{}
	for _, c := range sampleCommands() {
		got, err := DecodeCommand(EncodeCommand(c))
		if err != nil {
			t.Fatalf("%s: %v", c.Payload.Op(), err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("%s: round trip\n got %+v\nwant %+v", c.Payload.Op(), got.Payload, c.Payload)
		}
		seen[c.Payload.Op()] = true
	}
	for op := OpPutDomain; op < opMax; op++ {
		if !seen[op] {
			t.Errorf("op %s has no round-trip sample", op)
		}
	}
}

func TestDecodeRejectsBadInput(t *testing.T) {
	good := EncodeCommand(sampleCommands()[12])
	for name, b := range map[string][]byte{
		"empty":       nil,
		"bad version": append([]byte{9}, good[1:]...),
		"unknown op":  append([]byte{1, 200}, good[2:]...),
		"truncated":   good[:len(good)-3],
		"trailing":    append(append([]byte{}, good...), 0, 0, 0, 0), // past the optional quotas and search record
	} {
		if _, err := DecodeCommand(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
}

// TestSpoolWithoutJunk: a spool command and record written before the
// optional Junk field existed still decode.
func TestSpoolWithoutJunk(t *testing.T) {
	id := func(b byte) ID { var i ID; i[0] = b; return i }
	c := Command{ReqID: id(1), Payload: &Spool{ID: id(12), From: []byte("f"), Recipients: []SpoolRecipient{{User: id(4), Shard: 2}},
		Size: 9, Chunks: [][]byte{[]byte("c")}}}
	b := EncodeCommand(c)
	old := b[:len(b)-1] // without the trailing boolean
	got, err := DecodeCommand(old)
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Fatalf("old spool command: %+v, %v", got, err)
	}
	rec := SpoolRecord{ID: id(12), From: []byte("f"), Size: 9, Chunks: 1, Time: 5, Recipients: []SpoolRecipient{}}
	m := rec.Marshal()
	var back SpoolRecord
	if err := back.Unmarshal(m[:len(m)-1]); err != nil || !reflect.DeepEqual(back, rec) {
		t.Fatalf("old spool record: %+v, %v", back, err)
	}
	rec.Junk = true
	if err := back.Unmarshal(rec.Marshal()); err != nil || !back.Junk {
		t.Fatalf("spool record with Junk: %+v, %v", back, err)
	}
}

func TestResultRoundTrip(t *testing.T) {
	r := Result{Code: CodeConflict, UIDValidity: 5, UIDs: []UID{1, 0, 3}, ModSeqs: []uint64{0, 7}}
	var got Result
	if err := got.Unmarshal(r.Marshal()); err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("got %+v, %v", got, err)
	}
	claimed := Result{UIDValidity: 5, UIDs: []UID{12}, ModSeqs: []uint64{}, RecentClaimed: true, RecentBefore: 9}
	var gotClaimed Result
	if err := gotClaimed.Unmarshal(claimed.Marshal()); err != nil || !reflect.DeepEqual(gotClaimed, claimed) {
		t.Fatalf("claimed: got %+v, %v", gotClaimed, err)
	}
	// Results without a claim keep the form older nodes decode.
	plain := Result{UIDValidity: 5, UIDs: []UID{12}, ModSeqs: []uint64{}}
	if !bytes.HasPrefix(claimed.Marshal(), plain.Marshal()) || len(claimed.Marshal()) == len(plain.Marshal()) {
		t.Fatal("the claim changes the bytes before it")
	}
	if !errors.Is(got.Err(), ErrConflict) || CodeOf(ErrConflict) != CodeConflict || CodeOf(nil) != CodeOK {
		t.Fatal("error code mapping")
	}
}

func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands() {
		f.Add(EncodeCommand(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode back to the same bytes.
		again, err := DecodeCommand(EncodeCommand(c))
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("re-encode mismatch: %v", err)
		}
	})
}

func FuzzRecords(f *testing.F) {
	f.Add((&MailboxRecord{UIDNext: 3, Sealed: []byte("x")}).Marshal())
	f.Add((&MessageRecord{UID: 1, Sealed: []byte("y")}).Marshal())
	f.Add((&OutboundRecord{Version: 1, State: []byte("s")}).Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		var m MailboxRecord
		_ = m.Unmarshal(b)
		var msg MessageRecord
		_ = msg.Unmarshal(b)
		var u UserRecord
		_ = u.Unmarshal(b)
		var d DomainRecord
		_ = d.Unmarshal(b)
		var bl BlobRecord
		_ = bl.Unmarshal(b)
		var r Result
		_ = r.Unmarshal(b)
		var sp SpoolRecord
		_ = sp.Unmarshal(b)
		var ob OutboundRecord
		_ = ob.Unmarshal(b)
	})
}

func TestOutboundRecordRoundTrip(t *testing.T) {
	rec := OutboundRecord{ID: NewID(), User: NewID(), Size: 9, Chunks: 2, Created: -3, NextAttempt: 7, Held: true, Finished: 11, Version: 4, State: []byte("st")}
	var back OutboundRecord
	if err := back.Unmarshal(rec.Marshal()); err != nil || !reflect.DeepEqual(back, rec) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if err := back.Unmarshal(rec.Marshal()[:10]); err == nil {
		t.Fatal("truncated record decoded")
	}
}

// BenchmarkEncodeAppend encodes the command of a 1 MiB message in four
// chunks, the shape of a large delivery.
func BenchmarkEncodeAppend(b *testing.B) {
	chunks := make([][]byte, 4)
	for i := range chunks {
		chunks[i] = bytes.Repeat([]byte{byte(i)}, 256<<10)
	}
	cmd := Command{ReqID: NewID(), Time: 1, Payload: &Append{User: NewID(), Mailbox: NewID(), Message: NewID(),
		Blob: NewID(), Size: 1 << 20, Sealed: make([]byte, 200), Chunks: chunks}}
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	for b.Loop() {
		EncodeCommand(cmd)
	}
}

// TestDecodedChunksShareTheInput: a decoded command's message chunks are
// views of the encoded bytes (no copy of the bulk of a message), every
// other byte field a copy, and an empty chunk stays nil.
func TestDecodedChunksShareTheInput(t *testing.T) {
	chunk := bytes.Repeat([]byte("c"), 1000)
	cmds := []Payload{
		&Append{User: NewID(), Mailbox: NewID(), Message: NewID(), Blob: NewID(), Size: 1000,
			Sealed: []byte("attrs"), Chunks: [][]byte{chunk, nil}, SearchRecord: []byte("record")},
		&Spool{ID: NewID(), From: []byte("from"), Recipients: []SpoolRecipient{{User: NewID(), Shard: 1}},
			Size: 1000, Chunks: [][]byte{chunk, nil}},
		&Enqueue{ID: NewID(), User: NewID(), Size: 1000, State: []byte("state"), Chunks: [][]byte{chunk, nil}},
	}
	for _, p := range cmds {
		b := EncodeCommand(Command{ReqID: NewID(), Time: 1, Payload: p})
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("%T: %v", p, err)
		}
		var chunks [][]byte
		var other []byte
		switch d := got.Payload.(type) {
		case *Append:
			chunks, other = d.Chunks, d.Sealed
		case *Spool:
			chunks, other = d.Chunks, d.From
		case *Enqueue:
			chunks, other = d.Chunks, d.State
		}
		if len(chunks) != 2 || !bytes.Equal(chunks[0], chunk) || chunks[1] != nil {
			t.Fatalf("%T: chunks %d, first %d bytes, second %v", p, len(chunks), len(chunks[0]), chunks[1])
		}
		before := bytes.Clone(other)
		clear(b)
		if chunks[0][0] != 0 {
			t.Errorf("%T: the chunk is a copy, not a view of the input", p)
		}
		if !bytes.Equal(other, before) {
			t.Errorf("%T: a field other than the chunks shares the input", p)
		}
		if cap(chunks[0]) != len(chunks[0]) {
			t.Errorf("%T: the chunk's capacity reaches past it into the input", p)
		}
	}
}
