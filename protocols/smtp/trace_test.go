package smtp

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"
)

func TestProtocolName(t *testing.T) {
	tests := []struct {
		utf8, tls, auth bool
		want            string
	}{
		{false, false, false, "ESMTP"},
		{false, true, false, "ESMTPS"},
		{false, false, true, "ESMTPA"},
		{false, true, true, "ESMTPSA"},
		{true, false, false, "UTF8SMTP"},
		{true, true, false, "UTF8SMTPS"},
		{true, false, true, "UTF8SMTPA"},
		{true, true, true, "UTF8SMTPSA"},
	}
	for _, tt := range tests {
		if got := protocolName(tt.utf8, tt.tls, tt.auth); got != tt.want {
			t.Errorf("protocolName(%v, %v, %v) = %q, want %q", tt.utf8, tt.tls, tt.auth, got, tt.want)
		}
	}
}

func TestReceived(t *testing.T) {
	date := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	tests := []struct {
		name  string
		tr    traceInfo
		wants []string
		not   []string
	}{
		{
			name: "IPv4 with TLS and one recipient",
			tr: traceInfo{helo: "client.example", remote: netip.MustParseAddr("192.0.2.1"), hostname: "mx.example.test",
				protocol: "ESMTPS", id: "ABC.1", tls: "version=TLS1.3 cipher=TLS_AES_128_GCM_SHA256", rcpts: []string{"a@example.test"}, date: date},
			wants: []string{"Received: from client.example ([192.0.2.1])\r\n\tby mx.example.test (mailcluster) with ESMTPS id ABC.1\r\n\t(version=TLS1.3 cipher=TLS_AES_128_GCM_SHA256)\r\n\tfor <a@example.test>;\r\n\tWed, 04 Mar 2026 05:06:07 +0000\r\n"},
		},
		{
			name: "IPv6 address literal HELO, two recipients",
			tr: traceInfo{helo: "[IPv6:2001:db8::1]", remote: netip.MustParseAddr("2001:db8::1"), hostname: "mx.example.test",
				protocol: "ESMTP", id: "X.2", rcpts: []string{"a@example.test", "b@example.test"}, date: date},
			wants: []string{"from [IPv6:2001:db8::1] ([IPv6:2001:db8::1])"},
			not:   []string{" for <", "version="},
		},
		{
			name: "hostile HELO and recipient",
			tr: traceInfo{helo: "evil)\r\nX-Injected: yes(", remote: netip.MustParseAddr("192.0.2.9"), hostname: "mx.example.test",
				protocol: "ESMTP", id: "X.3", rcpts: []string{"a> b@example.test"}, date: date},
			wants: []string{"from [192.0.2.9] (helo=evil???X-Injected: yes?)", `for <"a> b"@example.test>`},
			not:   []string{"\r\nX-Injected"},
		},
		{
			name:  "no remote address",
			tr:    traceInfo{helo: "x", hostname: "h", protocol: "ESMTP", id: "I", date: date},
			wants: []string{"from x (unknown)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.tr.received()
			for _, w := range tt.wants {
				if !strings.Contains(got, w) {
					t.Errorf("Received %q lacks %q", got, w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(got, n) {
					t.Errorf("Received %q contains %q", got, n)
				}
			}
			for _, line := range strings.Split(strings.TrimSuffix(got, "\r\n"), "\r\n") {
				if len(line) > 998 || strings.ContainsAny(line, "\r\n") {
					t.Errorf("bad line %q", line)
				}
			}
		})
	}
}

func TestFormatPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"a@example.test", "a@example.test"},
		{"first.last+tag@example.test", "first.last+tag@example.test"},
		{"jörg@bücher.example", "jörg@bücher.example"},
		{"a b@example.test", `"a b"@example.test`},
		{`a"b\c@example.test`, `"a\"b\\c"@example.test`},
		{"a..b@example.test", `"a..b"@example.test`},
		{"a@[IPv6:2001:db8::1]", "a@[IPv6:2001:db8::1]"},
		{"a@exa>mple", "a@exa?mple"},
	}
	for _, tt := range tests {
		if got := formatPath(tt.in); got != tt.want {
			t.Errorf("formatPath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestValidHelo(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"mail.example.test", true},
		{"localhost", true},
		{"[192.0.2.1]", true},
		{"[IPv6:2001:db8::1]", true},
		{"[2001:db8::1]", false},
		{"[IPv6:192.0.2.1]", false},
		{"-bad.example", false},
		{"a..b", false},
		{"", false},
		{"exa(mple", false},
		{strings.Repeat("a", 64) + ".example", false},
	}
	for _, tt := range tests {
		if got := validHelo(tt.in); got != tt.want {
			t.Errorf("validHelo(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestSubmissionFields(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	var full textproto.Header
	full.Set("Date", "Tue, 03 Mar 2026 00:00:00 +0000")
	full.Set("Message-Id", "<x@y>")
	got, err := submissionFields(full, now, "mx.example.test")
	if err != nil || len(got) != 0 {
		t.Fatalf("complete header: got %q, %v; want nothing added", got, err)
	}

	got, err = submissionFields(textproto.Header{}, now, "bad host!")
	if err != nil {
		t.Fatal(err)
	}
	s := string(got)
	if !strings.HasPrefix(s, "Date: Wed, 04 Mar 2026 05:06:07 +0000\r\nMessage-ID: <") || !strings.HasSuffix(s, "@localhost>\r\n") {
		t.Errorf("added fields %q", s)
	}
	again, _ := submissionFields(textproto.Header{}, now, "mx.example.test")
	if fieldValue(string(again), "Message-ID") == fieldValue(s, "Message-ID") {
		t.Error("two Message-IDs are equal")
	}
}

func TestOwnAddress(t *testing.T) {
	tests := []struct {
		from string
		want bool
	}{
		{"alice@example.test", true},
		{"Alice@EXAMPLE.test", true},
		{"alice+lists@example.test", true},
		{"alice+@example.test", true},
		{"+alice@example.test", false},
		{"alice2@example.test", false},
		{"alice@example.org", false},
		{"alice+x@example.org", false},
		{"bob+alice@example.test", false},
		{"alice", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := ownAddress(tt.from, "alice@example.test"); got != tt.want {
			t.Errorf("ownAddress(%q) = %v, want %v", tt.from, got, tt.want)
		}
	}
}

func TestNeedsSMTPUTF8(t *testing.T) {
	ascii := []byte("From: <a@example.test>\r\nSubject: hi\r\n\r\nbody with ü\r\n")
	for _, tt := range []struct {
		from  string
		rcpts []string
		msg   []byte
		want  bool
	}{
		{"a@example.test", []string{"b@remote.test"}, ascii, false},
		{"a@example.test", []string{"b@remote.test"}, []byte("Subject: grüße\r\n\r\nx\r\n"), true},
		{"a@example.test", []string{"jürgen@remote.test"}, ascii, true},
		{"ä@example.test", []string{"b@remote.test"}, ascii, true},
	} {
		if got := needsSMTPUTF8(tt.from, tt.rcpts, tt.msg); got != tt.want {
			t.Errorf("needsSMTPUTF8(%q, %q, %q) = %v, want %v", tt.from, tt.rcpts, tt.msg, got, tt.want)
		}
	}
}

// TestStampInRoom: a message read by readMessage gets its trace fields in
// the room left in front of it, without a copy, and with the same bytes
// as a stamped copy; fields too long for the room, or a message that no
// longer lies in the buffer, are stamped into a copy.
func TestStampInRoom(t *testing.T) {
	tr := traceInfo{helo: "client.example", remote: netip.MustParseAddr("192.0.2.1"), hostname: "mx.example.test",
		protocol: "ESMTPS", id: "abc.1", rcpts: []string{"a@example.test"}, from: "s@example.org",
		date: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
	msg := []byte("Subject: hi\r\n\r\nbody\r\n")
	newBuf := func() []byte { return append(make([]byte, stampRoom), msg...) }
	for _, tc := range []struct {
		name   string
		extra  []byte
		inRoom bool
	}{
		{"fits", []byte("X-Extra: 1\r\n"), true},
		{"too long for the room", []byte("X-Extra: " + strings.Repeat("a", stampRoom) + "\r\n"), false},
	} {
		want := stamp(nil, msg, tr, tc.extra)
		if !bytes.HasSuffix(want, msg) || !bytes.HasPrefix(want, []byte("Return-Path: <s@example.org>\r\nReceived: ")) {
			t.Fatalf("%s: stamped copy is %q", tc.name, want)
		}
		buf := newBuf()
		got := stamp(buf, buf[stampRoom:], tr, tc.extra)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: stamped in place %q, want %q", tc.name, got, want)
		}
		if shared := &got[len(got)-len(msg)] == &buf[stampRoom]; shared != tc.inRoom {
			t.Errorf("%s: message left in the buffer = %v, want %v", tc.name, shared, tc.inRoom)
		}
	}
	// A message replaced after reading (the sender checks strip a field)
	// is not where the buffer has room: it is copied, and the buffer's
	// room is left alone.
	buf := newBuf()
	other := bytes.Clone(msg)
	got := stamp(buf, other, tr, nil)
	if !bytes.Equal(got, stamp(nil, msg, tr, nil)) || &got[len(got)-len(msg)] == &other[0] {
		t.Errorf("a replaced message was stamped as %q", got)
	}
	if !bytes.Equal(buf[:stampRoom], make([]byte, stampRoom)) {
		t.Error("stamping a replaced message wrote into the buffer's room")
	}
}
