package smtp

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseMessage(t *testing.T) {
	header := "From: a@example.test\r\nSubject: hi\r\n\r\n" // 38 bytes
	tests := []struct {
		name   string
		msg    string
		limit  int
		want   error // nil, errHeaderTooLarge or errMalformedHeader
		fields int
	}{
		{"simple", header + "body\r\n", 1024, nil, 2},
		{"no body", "From: a@example.test\r\n", 1024, nil, 1},
		{"empty", "", 1024, nil, 0},
		{"no header fields", "\r\nbody only\r\n", 1024, nil, 0},
		{"bare LF", "From: a\nSubject: b\n\nbody\n", 1024, nil, 2},
		{"folded field", "Subject: a\r\n  folded\r\n\tagain\r\n\r\n", 1024, nil, 1},
		{"8-bit value", "Subject: caf\xc3\xa9\r\n\r\n", 1024, nil, 1},
		{"header exactly at the limit", header + "body\r\n", len(header), nil, 2},
		{"header one byte over the limit", header + "body\r\n", len(header) - 1, errHeaderTooLarge, 0},
		{"limit inside a field", "Subject: " + strings.Repeat("x", 100) + "\r\n\r\n", 50, errHeaderTooLarge, 0},
		{"limit at a field end", "A: b\r\nC: d\r\n\r\n", len("A: b\r\n"), errHeaderTooLarge, 0},
		{"zero limit", header, 0, errHeaderTooLarge, 0},
		{"line without colon", "From: a\r\nnot a field\r\n\r\n", 1024, errMalformedHeader, 0},
		{"leading continuation", " From: a\r\n\r\n", 1024, errMalformedHeader, 0},
		{"space in field name", "Fr om: a\r\n\r\n", 1024, errMalformedHeader, 0},
		{"control character in field name", "Fr\x01om: a\r\n\r\n", 1024, errMalformedHeader, 0},
		{"mbox From line", "From someone Mon Jan  1 00:00:00 2026\r\nSubject: a\r\n\r\n", 1024, errMalformedHeader, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr, err := parseMessage([]byte(tt.msg), tt.limit)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("parseMessage: %v", err)
				}
				if n := hdr.Len(); n != tt.fields {
					t.Errorf("%d fields, want %d", n, tt.fields)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("parseMessage: got %v, want %v", err, tt.want)
			}
			if strings.Contains(err.Error(), "not a field") || strings.Contains(err.Error(), "someone") {
				t.Errorf("error %q quotes message content", err)
			}
		})
	}
}

// FuzzParseMessage feeds arbitrary data to the header parser and to the
// header stamping: neither may panic, and a message that parses must still
// parse, with the trace fields first and its own bytes unchanged, once
// stamped.
func FuzzParseMessage(f *testing.F) {
	f.Add([]byte("From: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n"), uint16(1024))
	f.Add([]byte("Subject: a\r\n folded\r\n\r\n"), uint16(12))
	f.Add([]byte(""), uint16(0))
	f.Add([]byte("\r\n"), uint16(2))
	f.Add([]byte(" leading\r\n\r\n"), uint16(100))
	f.Add([]byte("no colon\n\nbody"), uint16(100))
	f.Add([]byte("A: b\nC: d\n"), uint16(5))
	f.Add([]byte("A\x00: b\r\n\r\n"), uint16(64))
	f.Fuzz(func(t *testing.T, msg []byte, limit uint16) {
		hdr, err := parseMessage(msg, int(limit))
		if err != nil {
			if !errors.Is(err, errHeaderTooLarge) && !errors.Is(err, errMalformedHeader) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		first := string(msg[:min(len(msg), 300)])
		tr := traceInfo{
			helo:     first,
			remote:   netip.MustParseAddr("2001:db8::1"),
			hostname: "mx.example.test",
			protocol: protocolName(true, true, true),
			id:       "ID.1",
			tls:      first,
			date:     time.Unix(0, 0).UTC(),
		}
		if checkAddress(first, true) == nil {
			tr.from = first
			tr.rcpts = []string{first}
		}
		extra, err := submissionFields(hdr, tr.date, first)
		if err != nil {
			t.Fatalf("submissionFields: %v", err)
		}
		out := stamp(nil, msg, tr, extra)
		if !bytes.HasSuffix(out, msg) {
			t.Fatal("stamping changed the message")
		}
		prefix := string(out[:len(out)-len(msg)])
		for i, line := range strings.Split(strings.TrimSuffix(prefix, "\r\n"), "\r\n") {
			if strings.ContainsAny(line, "\r\n") || line == "" || (i > 0 && line[0] == ' ') {
				t.Fatalf("added header line %d is broken: %q", i, line)
			}
		}
		hdr2, err := parseMessage(out, len(out)+1)
		if err != nil {
			t.Fatalf("stamped message does not parse: %v", err)
		}
		fields := hdr2.Fields()
		if !fields.Next() || fields.Key() != "Return-Path" || !fields.Next() || fields.Key() != "Received" {
			t.Fatal("trace fields are not first")
		}
		if hdr2.Len() != hdr.Len()+2+strings.Count(string(extra), "\r\n") {
			t.Fatalf("stamped message has %d fields, want %d+trace", hdr2.Len(), hdr.Len())
		}
	})
}

func TestDeliveryFingerprint(t *testing.T) {
	msg := []byte("Message-ID: <a@b>\r\n\r\nbody\r\n")
	a := deliveryFingerprint("x@y", "<a@b>", msg)
	if a == nil {
		t.Fatal("no fingerprint for a message with a Message-ID")
	}
	if b := deliveryFingerprint("x@y", " <a@b> ", msg); !bytes.Equal(a, b) {
		t.Fatal("the same message gives another fingerprint")
	}
	for _, other := range [][]byte{
		deliveryFingerprint("z@y", "<a@b>", msg),
		deliveryFingerprint("x@y", "<c@b>", msg),
		deliveryFingerprint("x@y", "<a@b>", append([]byte(nil), append(msg, 'x')...)),
	} {
		if bytes.Equal(a, other) {
			t.Fatal("a different sender, id or body gives the same fingerprint")
		}
	}
	if deliveryFingerprint("x@y", "", msg) != nil {
		t.Fatal("a message without a Message-ID got a fingerprint")
	}
}
