package workload

import (
	"bytes"
	"errors"
	"testing"

	"github.com/mailcluster/mailcluster/bench/corpus"
)

func testCorpus(t *testing.T) *corpus.Corpus {
	t.Helper()
	c, err := corpus.Generate(corpus.Config{Seed: 11, Messages: 6, Users: 3})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ptrs(c *corpus.Corpus, idx ...int) []*corpus.Message {
	out := make([]*corpus.Message, len(idx))
	for i, j := range idx {
		out[i] = &c.Messages[j]
	}
	return out
}

// trace prepends what a server adds on delivery.
func trace(data []byte) []byte {
	return append([]byte("Return-Path: <x@example.org>\r\nReceived: from a\r\n\tby b; Mon, 5 Jan 2026 08:00:00 +0000\r\n"), data...)
}

// TestChecker shows the check passes on intact mail and catches every
// kind of failure it promises to.
func TestChecker(t *testing.T) {
	c := testCorpus(t)
	acked := ptrs(c, 0, 1, 2)
	m0, m1, m2 := c.Messages[0], c.Messages[1], c.Messages[2]
	corrupt := func(data []byte) []byte {
		b := bytes.Clone(data)
		b[len(b)-3] ^= 0x01 // one bit near the end of the body
		return b
	}
	type fetched struct {
		user int
		data []byte
	}
	tests := []struct {
		name                                   string
		mail                                   []fetched
		ok                                     bool
		missing, mismatched, duplicates, unack int
	}{
		{name: "all intact", ok: true, mail: []fetched{
			{m0.Rcpt, trace(m0.Data)}, {m1.Rcpt, m1.Data}, {m2.Rcpt, trace(m2.Data)},
		}},
		{name: "one bit flipped", mismatched: 1, mail: []fetched{
			{m0.Rcpt, trace(m0.Data)}, {m1.Rcpt, trace(corrupt(m1.Data))}, {m2.Rcpt, m2.Data},
		}},
		{name: "truncated", mismatched: 1, mail: []fetched{
			{m0.Rcpt, m0.Data[:len(m0.Data)-10]}, {m1.Rcpt, m1.Data}, {m2.Rcpt, m2.Data},
		}},
		{name: "missing", missing: 1, mail: []fetched{
			{m0.Rcpt, m0.Data}, {m2.Rcpt, m2.Data},
		}},
		{name: "stored twice", duplicates: 1, mail: []fetched{
			{m0.Rcpt, m0.Data}, {m0.Rcpt, trace(m0.Data)}, {m1.Rcpt, m1.Data}, {m2.Rcpt, m2.Data},
		}},
		{name: "wrong mailbox", mismatched: 1, mail: []fetched{
			{m0.Rcpt + 1, m0.Data}, {m1.Rcpt, m1.Data}, {m2.Rcpt, m2.Data},
		}},
		{name: "unacknowledged and foreign mail are not failures", ok: true, unack: 1, mail: []fetched{
			{m0.Rcpt, m0.Data}, {m1.Rcpt, m1.Data}, {m2.Rcpt, m2.Data},
			{c.Messages[4].Rcpt, c.Messages[4].Data}, {0, []byte("Subject: bounce\r\n\r\nhi\r\n")},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := NewChecker(acked)
			for _, f := range tt.mail {
				ch.Add(f.user, f.data, c)
			}
			r := ch.Result()
			if r.OK() != tt.ok || r.Missing != tt.missing || r.Mismatched != tt.mismatched ||
				r.Duplicates != tt.duplicates || r.Unacknowledged != tt.unack {
				t.Fatalf("result %+v, want ok=%v missing=%d mismatched=%d duplicates=%d unacknowledged=%d",
					r, tt.ok, tt.missing, tt.mismatched, tt.duplicates, tt.unack)
			}
			if !tt.ok && len(r.Problems) == 0 {
				t.Fatal("a failed check explains nothing")
			}
		})
	}
}

func TestUserShares(t *testing.T) {
	shares := userShares(10, 3)
	seen := make(map[int]int)
	for w, s := range shares {
		if len(s) == 0 {
			t.Fatalf("worker %d has no user", w)
		}
		for _, u := range s {
			seen[u]++
		}
	}
	if len(seen) != 10 {
		t.Fatalf("%d users covered, want 10", len(seen))
	}
	for u, n := range seen {
		if n != 1 {
			t.Fatalf("user %d shared by %d workers", u, n)
		}
	}
}

func TestCheckLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:25": true, "[::1]:143": true, "127.9.9.9:1": true,
		"192.0.2.1:25": false, "example.org:25": false, "localhost:25": false, "no-port": false,
	} {
		err := checkLoopback(addr)
		if (err == nil) != ok {
			t.Errorf("checkLoopback(%q) = %v", addr, err)
		}
		if !ok && err != nil && addr != "no-port" && !errors.Is(err, errNotLoopback) {
			t.Errorf("checkLoopback(%q) = %v, want errNotLoopback", addr, err)
		}
	}
}
