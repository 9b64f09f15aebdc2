package pop3

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		line string
		want command
		err  bool
	}{
		{line: "STAT", want: command{name: "STAT"}},
		{line: "stat", want: command{name: "STAT"}},
		{line: "LIST 1", want: command{name: "LIST", args: []string{"1"}, rest: "1"}},
		{line: "TOP 1 10", want: command{name: "TOP", args: []string{"1", "10"}, rest: "1 10"}},
		{line: "STAT ", want: command{name: "STAT", rest: ""}},
		{line: "LIST  2 ", want: command{name: "LIST", args: []string{"2"}, rest: " 2 "}},
		{line: "PASS pass with spaces", want: command{name: "PASS", args: []string{"pass", "with", "spaces"}, rest: "pass with spaces"}},
		{line: "PASS pässwörd", want: command{name: "PASS", args: []string{"pässwörd"}, rest: "pässwörd"}},
		{line: "XSOMETHINGLONGER", want: command{name: "XSOMETHINGLONGER"}},
		{line: "", err: true},
		{line: " STAT", err: true},
		{line: "ST4T", err: true},
		{line: "STAT\x00", err: true},
		{line: "PASS a\tb", err: true},
		{line: "PASS a\rb", err: true},
		{line: "PASS a\x7fb", err: true},
		{line: "ABCDEFGHIJKLMNOPQ", err: true},
		{line: "\xff\xfe", err: true},
		{line: "AUTH PLAIN " + strings.Repeat("A", maxAuthLine), err: true},
	}
	for _, tc := range tests {
		got, err := parseCommand([]byte(tc.line))
		if tc.err {
			if !errors.Is(err, errSyntax) {
				t.Errorf("parse %q: got %+v, %v; want a syntax error", tc.line, got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parse %q: got %+v, %v; want %+v", tc.line, got, err, tc.want)
		}
	}
}

func TestParseNumber(t *testing.T) {
	for s, want := range map[string]int{"0": 0, "1": 1, "0042": 42, "999999999": 999999999} {
		if got, ok := parseNumber(s); !ok || got != want {
			t.Errorf("parseNumber(%q) = %d, %v; want %d", s, got, ok, want)
		}
	}
	for _, s := range []string{"", "-1", "+1", "1a", "0x1", "1_0", "1000000000", " 1", "١"} {
		if got, ok := parseNumber(s); ok {
			t.Errorf("parseNumber(%q) = %d, accepted", s, got)
		}
	}
}

func TestReadLine(t *testing.T) {
	long := strings.Repeat("x", 300)
	input := "STAT\r\nLIST\n" + long + "\r\nNOOP\r\n" + strings.Repeat("y", maxDiscard+5000) + "\r\nQUIT\r\n"
	r := bufio.NewReaderSize(strings.NewReader(input), 64)
	type result struct {
		line string
		err  error
	}
	var got []result
	for {
		line, err := readLine(r, 256)
		if errors.Is(err, io.EOF) {
			break
		}
		got = append(got, result{string(line), err})
		if errors.Is(err, errLineFlood) {
			break
		}
	}
	want := []result{{"STAT", nil}, {"LIST", nil}, {"", errLineTooLong}, {"NOOP", nil}, {"", errLineFlood}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}

	// A line that is exactly at the limit, CRLF included, is accepted.
	exact := strings.Repeat("z", 254)
	r = bufio.NewReaderSize(strings.NewReader(exact+"\r\n"+exact+"z\r\n"), 16)
	if line, err := readLine(r, 256); err != nil || string(line) != exact {
		t.Fatalf("exact: got %d octets, %v", len(line), err)
	}
	if _, err := readLine(r, 256); !errors.Is(err, errLineTooLong) {
		t.Fatalf("one over: got %v", err)
	}
	// An overlong last line without an ending reports the read error.
	r = bufio.NewReaderSize(strings.NewReader(long), 16)
	if _, err := readLine(r, 256); !errors.Is(err, io.EOF) {
		t.Fatalf("unterminated: got %v", err)
	}
}

func TestWriteDotStuffed(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"a\r\nb\r\n", "a\r\nb\r\n"},
		{"a\nb", "a\r\nb\r\n"},
		{".\r\n", "..\r\n"},
		{"x\r\n.hidden\r\n..two\r\n.\r\n", "x\r\n..hidden\r\n...two\r\n..\r\n"},
		{"\r\n\r\n", "\r\n\r\n"},
		{"a\rb\r\n", "a\rb\r\n"},
	}
	for _, tc := range tests {
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		if err := writeDotStuffed(w, []byte(tc.in)); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		if buf.String() != tc.want {
			t.Errorf("stuff %q: got %q, want %q", tc.in, buf.String(), tc.want)
		}
	}
}

func TestSplitHeaderAndLines(t *testing.T) {
	msg := "A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3"
	h, b, ok := splitHeader([]byte(msg))
	if !ok || string(h) != "A: 1\r\nB: 2\r\n\r\n" || string(b) != "l1\r\nl2\r\nl3" {
		t.Fatalf("split: %q %q %v", h, b, ok)
	}
	for n, want := range map[int]string{0: "", 1: "l1\r\n", 2: "l1\r\nl2\r\n", 3: "l1\r\nl2\r\nl3", 99: "l1\r\nl2\r\nl3"} {
		if got := string(firstLines(b, n)); got != want {
			t.Errorf("firstLines(%d) = %q, want %q", n, got, want)
		}
	}
	if h, b, ok := splitHeader([]byte("A: 1\r\n")); ok || string(h) != "A: 1\r\n" || b != nil {
		t.Errorf("no body: %q %q %v", h, b, ok)
	}
	if h, _, ok := splitHeader([]byte("\r\nbody")); !ok || string(h) != "\r\n" {
		t.Errorf("empty header: %q %v", h, ok)
	}
	for h, want := range map[string]bool{"A: 1\r\n\r\n": true, "\r\n": true, "A: 1\n\n": true, "A: 1\r\n": false, "A: 1": false, "": false} {
		if endsWithBlankLine([]byte(h)) != want {
			t.Errorf("endsWithBlankLine(%q) != %v", h, want)
		}
	}
}

// FuzzParseCommand checks that any line parses without a panic, and that
// what parses is well formed and parses again to the same command.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"STAT", "LIST 1", "TOP 1 10", "PASS a b  c ", "AUTH PLAIN =", "uidl", "", " ", "X\x00", "LIST\t1", "QUIT\r"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		cmd, err := parseCommand(line)
		if err != nil {
			if !errors.Is(err, errSyntax) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if cmd.name == "" || len(cmd.name) > maxKeyword || strings.ToUpper(cmd.name) != cmd.name {
			t.Fatalf("bad name %q", cmd.name)
		}
		for _, c := range []byte(cmd.name) {
			if c < 'A' || c > 'Z' {
				t.Fatalf("bad name %q", cmd.name)
			}
		}
		for _, a := range cmd.args {
			if a == "" || strings.ContainsAny(a, " \r\n\x00") {
				t.Fatalf("bad argument %q", a)
			}
		}
		fields := strings.FieldsFunc(cmd.rest, func(r rune) bool { return r == ' ' })
		if !reflect.DeepEqual(cmd.args, fields) && len(cmd.args)+len(fields) > 0 {
			t.Fatalf("args %q do not match rest %q", cmd.args, cmd.rest)
		}
		again := cmd.name
		if len(cmd.args) > 0 {
			again += " " + strings.Join(cmd.args, " ")
		}
		cmd2, err := parseCommand([]byte(again))
		if err != nil || cmd2.name != cmd.name || !reflect.DeepEqual(cmd2.args, cmd.args) {
			t.Fatalf("reparse of %q: %+v, %v; want %+v", again, cmd2, err, cmd)
		}
	})
}
