package filter_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols/filter"
	"github.com/mailcluster/mailcluster/protocols/filter/filtertest"
)

func message(body string) []byte {
	return []byte("From: Ann <ann@example.net>\r\nTo: bob@example.org\r\nSubject: hello\r\n" +
		"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <1@example.net>\r\n\r\n" + body + "\r\n")
}

var env = filter.Envelope{RemoteIP: "192.0.2.1", Helo: "mx.example.net", From: "ann@example.net",
	Rcpts: []string{"bob@example.org"}, QueueID: "q1"}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// TestClamd: the real clamd finds the EICAR string in a message and
// passes a clean one.
func TestClamd(t *testing.T) {
	c := &filter.Clamd{Address: filtertest.Clamd(t)}
	v, err := c.Scan(ctx(t), env, message("attached: "+filtertest.EICAR))
	if err != nil || v.Action != filter.Reject || !strings.Contains(v.Reason, "Eicar") {
		t.Fatalf("EICAR: %+v, %v", v, err)
	}
	v, err = c.Scan(ctx(t), env, message("nothing to see"))
	if err != nil || v.Action != filter.Accept {
		t.Fatalf("clean message: %+v, %v", v, err)
	}
	// A message larger than one stream chunk.
	v, err = c.Scan(ctx(t), env, message(strings.Repeat("x", 300<<10)+filtertest.EICAR))
	if err != nil || v.Action != filter.Reject {
		t.Fatalf("large EICAR message: %+v, %v", v, err)
	}
}

// TestRspamd: the real rspamd rejects GTUBE by default, sends it to Junk
// under a higher reject score of ours, and passes a plain message (under
// a junk score of ours) with its score recorded in header fields.
func TestRspamd(t *testing.T) {
	url := filtertest.Rspamd(t)
	r := &filter.Rspamd{URL: url}
	v, err := r.Scan(ctx(t), env, message(filtertest.GTUBE))
	if err != nil || v.Action != filter.Reject || !strings.Contains(string(v.Headers), "X-Spam: Yes") {
		t.Fatalf("GTUBE: %+v, %v", v, err)
	}
	r.RejectScore = 50
	v, err = r.Scan(ctx(t), env, message(filtertest.GTUBE))
	if err != nil || v.Action != filter.Junk || !strings.Contains(v.Reason, "spam score") {
		t.Fatalf("GTUBE under reject score 50: %+v, %v", v, err)
	}
	// Without DNS (as here) rspamd scores any message several points for
	// unresolvable hosts; a junk score of our own keeps a plain one in.
	plain := &filter.Rspamd{URL: url, JunkScore: 12}
	v, err = plain.Scan(ctx(t), env, message("Hello Bob,\r\n\r\nsee you at lunch tomorrow.\r\n\r\nAnn"))
	if err != nil || v.Action != filter.Accept {
		t.Fatalf("plain message: %+v, %v", v, err)
	}
	h := string(v.Headers)
	if !strings.HasPrefix(h, "X-Spam-Status: No, score=") || !strings.Contains(h, "X-Spam-Score: ") {
		t.Errorf("header fields %q", h)
	}
}

// TestScannerDown: a scanner that cannot be reached is ErrUnavailable, and
// the chain accepts the message (default) or defers it (DeferOnFailure).
func TestScannerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, s := range []filter.Scanner{&filter.Clamd{Address: "tcp://" + addr}, &filter.Rspamd{URL: "http://" + addr}} {
		if _, err := s.Scan(ctx(t), env, message("x")); !errors.Is(err, filter.ErrUnavailable) {
			t.Errorf("%s down: %v, want ErrUnavailable", s.Name(), err)
		}
	}
	var failed []string
	chain := &filter.Chain{Scanners: []filter.Scanner{&filter.Clamd{Address: "tcp://" + addr}},
		OnResult: func(name string, _ filter.Verdict, err error) {
			if err != nil {
				failed = append(failed, name)
			}
		}}
	if v := chain.Scan(ctx(t), env, message("x")); v.Action != filter.Accept || len(failed) != 1 {
		t.Errorf("fail open: %+v, failures %v", v, failed)
	}
	chain.DeferOnFailure = true
	if v := chain.Scan(ctx(t), env, message("x")); v.Action != filter.Defer {
		t.Errorf("fail closed: %+v", v)
	}
}

// fixed is a scanner with a set answer.
type fixed struct {
	name string
	v    filter.Verdict
}

func (f fixed) Name() string { return f.name }
func (f fixed) Scan(context.Context, filter.Envelope, []byte) (filter.Verdict, error) {
	return f.v, nil
}

// TestChainCombines: Junk beats Accept, a Reject stops the chain, header
// fields accumulate.
func TestChainCombines(t *testing.T) {
	accept := fixed{"a", filter.Verdict{Action: filter.Accept, Headers: []byte("X-A: 1\r\n")}}
	junk := fixed{"j", filter.Verdict{Action: filter.Junk, Reason: "spam", Headers: []byte("X-J: 1\r\n")}}
	reject := fixed{"r", filter.Verdict{Action: filter.Reject, Reason: "virus"}}
	v := (&filter.Chain{Scanners: []filter.Scanner{accept, junk}}).Scan(context.Background(), env, nil)
	if v.Action != filter.Junk || string(v.Headers) != "X-A: 1\r\nX-J: 1\r\n" {
		t.Errorf("accept+junk: %+v", v)
	}
	v = (&filter.Chain{Scanners: []filter.Scanner{reject, junk}}).Scan(context.Background(), env, nil)
	if v.Action != filter.Reject || v.Reason != "virus" {
		t.Errorf("reject first: %+v", v)
	}
}
