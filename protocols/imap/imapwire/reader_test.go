package imapwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// read reads every command of input; continuations counts the "+"
// requests.
func read(t *testing.T, input string, lim Limits) (cmds []*Command, errs []error, continuations int) {
	t.Helper()
	r := NewReader(bufio.NewReaderSize(strings.NewReader(input), 4096), lim)
	r.Continue = func() error { continuations++; return nil }
	for range 100 {
		cmd, err := r.ReadCommand()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return cmds, errs, continuations
		}
		if err != nil {
			errs = append(errs, err)
			var we *Error
			if !errors.As(err, &we) || we.Fatal {
				return cmds, errs, continuations
			}
			continue
		}
		cmds = append(cmds, cmd)
	}
	t.Fatal("too many commands")
	return
}

func TestReadCommand(t *testing.T) {
	cmds, errs, conts := read(t, "a1 LOGIN {5}\r\nalice {6+}\r\nse\"cr\\\r\n"+
		"a2 uid fetch 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM)])\r\n"+
		"a3 SEARCH SUBJECT {4}\r\na\r\nb\r\n", Limits{})
	if len(errs) != 0 || len(cmds) != 3 {
		t.Fatalf("commands %d, errors %v", len(cmds), errs)
	}
	if conts != 2 {
		t.Errorf("%d continuation requests, want 2 (one per synchronizing literal)", conts)
	}
	if c := cmds[0]; c.Tag != "a1" || c.Name != "LOGIN" || string(c.Wire) != "a1 LOGIN \"alice\" \"se\\\"cr\\\\\"\r\n" {
		t.Errorf("LOGIN: %+v wire %q", c, c.Wire)
	}
	if c := cmds[1]; c.Name != "UID FETCH" || string(c.Wire) != "a2 uid fetch 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM)])\r\n" || len(c.Args) != 9 {
		t.Errorf("UID FETCH: %q %q (%d args)", c.Name, c.Wire, len(c.Args))
	}
	// A literal with CR LF stays a literal, non-synchronizing.
	if c := cmds[2]; string(c.Wire) != "a3 SEARCH SUBJECT {4+}\r\na\r\nb\r\n" {
		t.Errorf("SEARCH: %q", c.Wire)
	}
}

func TestReadCommandRefusals(t *testing.T) {
	cases := []struct {
		name, input string
		tag         string
		no          bool // NO [TOOBIG] rather than BAD
		fatal       bool
		conts       int
	}{
		{name: "sync literal too big", input: "a1 LOGIN {4097}\r\n", tag: "a1", no: true},
		{name: "sync literal 4 GiB", input: "x1 LOGIN {4294967295}\r\n", tag: "x1", no: true},
		{name: "literal size overflow", input: "x1 LOGIN {99999999999999999999}\r\n", tag: "x1"},
		{name: "nonsync skipped", input: "a1 SEARCH {5000+}\r\n" + strings.Repeat("x", 5000) + " {2+}\r\nab\r\n", tag: "a1", no: true},
		{name: "nonsync too big to skip", input: "a1 SEARCH {70000+}\r\n", tag: "a1", no: true, fatal: true},
		{name: "deep lists", input: "a1 SEARCH " + strings.Repeat("(", 100) + "ALL" + strings.Repeat(")", 100) + "\r\n", tag: "a1"},
		{name: "unbalanced", input: "a1 FETCH 1 (FLAGS\r\n", tag: "a1"},
		{name: "close without open", input: "a1 FETCH 1 FLAGS)\r\n", tag: "a1"},
		{name: "line too long", input: "a1 NOOP " + strings.Repeat("x", 60<<10) + "\r\n", tag: "a1"},
		{name: "line of 900 KiB", input: "a1 NOOP " + strings.Repeat("x", 900<<10) + "\r\n", tag: "a1"},
		{name: "line over 1 MiB", input: "a1 NOOP " + strings.Repeat("x", 2<<20) + "\r\n", tag: "a1", fatal: true},
		{name: "line too long ends in literal", input: "a1 NOOP " + strings.Repeat("x", 60<<10) + " {3+}\r\nabc\r\n", tag: "a1"},
		{name: "unterminated quote", input: "a1 SELECT \"INBOX\r\n", tag: "a1"},
		{name: "bad escape", input: "a1 SELECT \"a\\b\"\r\n", tag: "a1"},
		{name: "no tag", input: "\r\n", tag: ""},
		{name: "bad tag", input: "a+1 NOOP\r\n", tag: ""},
		{name: "control char", input: "a1 NOOP \x01\r\n", tag: "a1"},
		{name: "literal8 outside APPEND", input: "a1 SEARCH ~{3}\r\n", tag: "a1"},
		{name: "too many tokens", input: "a1 SEARCH" + strings.Repeat(" ALL", 5000) + "\r\n", tag: "a1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmds, errs, conts := read(t, tc.input+"z9 NOOP\r\n", Limits{})
			if len(errs) != 1 {
				t.Fatalf("errors %v, commands %d", errs, len(cmds))
			}
			var we *Error
			if !errors.As(errs[0], &we) {
				t.Fatalf("error %v is no *Error", errs[0])
			}
			if we.Tag != tc.tag || we.No != tc.no || we.Fatal != tc.fatal || (tc.no && we.Code != "TOOBIG") {
				t.Errorf("refusal %+v", we)
			}
			if conts != tc.conts {
				t.Errorf("%d continuation requests", conts)
			}
			// The reader is in step: the next command is read.
			if !tc.fatal && (len(cmds) != 1 || cmds[0].Tag != "z9") {
				t.Errorf("after the refusal: %d commands", len(cmds))
			}
		})
	}
}

func TestReadCommandStream(t *testing.T) {
	r := NewReader(bufio.NewReader(strings.NewReader("a1 APPEND {5}\r\nINBOX (\\Seen) {11}\r\nhello world\r\n")), Limits{})
	conts := 0
	r.Continue = func() error { conts++; return nil }
	r.Stream = func(cmd *Command, h LiteralHeader) bool { return cmd.Name == "APPEND" && len(cmd.Args) > 0 }
	cmd, err := r.ReadCommand()
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Pending == nil || cmd.Pending.Size != 11 || cmd.Pending.NonSync || string(cmd.Wire) != "a1 APPEND \"INBOX\" (\\Seen) " || conts != 1 {
		t.Fatalf("APPEND: %+v wire %q, %d continuations", cmd.Pending, cmd.Wire, conts)
	}
	msg := make([]byte, 11)
	if _, err := io.ReadFull(r.Buffered(), msg); err != nil || string(msg) != "hello world" {
		t.Fatalf("message %q, %v", msg, err)
	}
	if rest, err := r.ReadLine(100); err != nil || len(rest) != 0 {
		t.Errorf("rest %q, %v", rest, err)
	}
}

func TestDecodeMailbox(t *testing.T) {
	good := map[string]string{
		"INBOX": "INBOX", "inbox": "INBOX", "Sent": "Sent", "a&-b": "a&b",
		"&ZeVnLIqe-": "日本語", "Entw&APw-rfe": "Entwürfe", "&2D3eAA-": "\U0001F600",
		"Ünïcödé": "Ünïcödé", "a/b c": "a/b c",
	}
	for in, want := range good {
		if got, err := DecodeMailbox([]byte(in)); err != nil || got != want {
			t.Errorf("DecodeMailbox(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"&", "&Jjo", "&AGEAYgBj-", "&AAE-", "a\x01b", "\x7f", "\xff\xfe", "&2D0-", "&*-", "&U,BTF2XlZyyKng"} {
		if got, err := DecodeMailbox([]byte(in)); !errors.Is(err, ErrMailboxEncoding) {
			t.Errorf("DecodeMailbox(%q) = %q, %v; want an encoding error", in, got, err)
		}
	}
}

// FuzzReadCommand: no input panics or escapes the limits, and a command
// read re-reads from its Wire as the same command.
func FuzzReadCommand(f *testing.F) {
	for _, seed := range []string{
		"a1 LOGIN {5}\r\nalice {3+}\r\npwd\r\n",
		"a2 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>)\r\n",
		"a3 SEARCH OR (FROM \"a\\\"b\") NOT SUBJECT {4}\r\na\r\nb\r\n",
		"a4 APPEND INBOX (\\Seen) \"01-Jan-2024 00:00:00 +0000\" ~{3}\r\nabc\r\n",
		"a5 LIST \"\" \"%/&ZeVnLIqe-*\"\r\n", "\r\n", "a6 X {99999999999999999999}\r\n", "a7 ((((\r\n",
	} {
		f.Add([]byte(seed))
	}
	lim := Limits{MaxCommand: 512, MaxLiteral: 64, MaxDepth: 4, MaxTokens: 32, MaxDiscard: 256, MaxLineDiscard: 1024}
	f.Fuzz(func(t *testing.T, input []byte) {
		r := NewReader(bufio.NewReaderSize(bytes.NewReader(input), 16), lim)
		r.Stream = func(cmd *Command, h LiteralHeader) bool { return cmd.Name == "APPEND" && len(cmd.Args) > 0 }
		for range 64 {
			cmd, err := r.ReadCommand()
			var we *Error
			if errors.As(err, &we) {
				if we.Fatal {
					return
				}
				continue
			}
			if err != nil {
				return
			}
			if len(cmd.Args) > lim.MaxTokens || len(cmd.Wire) > lim.MaxCommand+2 {
				t.Fatalf("limits exceeded: %d tokens, %d bytes", len(cmd.Args), len(cmd.Wire))
			}
			for _, tok := range cmd.Args {
				if tok.Start < 0 || tok.End < tok.Start || tok.End > len(cmd.Wire) {
					t.Fatalf("token range %d:%d outside the wire (%d bytes)", tok.Start, tok.End, len(cmd.Wire))
				}
				if tok.Kind == KindAtom && string(cmd.Wire[tok.Start:tok.End]) != string(tok.Value) {
					t.Fatalf("atom %q at %d:%d reads %q", tok.Value, tok.Start, tok.End, cmd.Wire[tok.Start:tok.End])
				}
				_ = cmd.Without(tok.Start, tok.End)
			}
			if cmd.Pending != nil {
				if cmd.Pending.Size < 0 {
					t.Fatalf("negative literal")
				}
				if _, err := io.CopyN(io.Discard, r.Buffered(), cmd.Pending.Size); err != nil {
					return
				}
				if _, err := r.ReadLine(lim.MaxCommand); err != nil && !errors.Is(err, ErrTooLong) {
					return
				}
				continue
			}
			again, err := NewReader(bufio.NewReader(bytes.NewReader(cmd.Wire)), Limits{MaxCommand: 4 * lim.MaxCommand, MaxLiteral: lim.MaxLiteral, MaxDepth: lim.MaxDepth, MaxTokens: lim.MaxTokens}).ReadCommand()
			if err != nil {
				t.Fatalf("re-reading %q: %v", cmd.Wire, err)
			}
			if again.Tag != cmd.Tag || again.Name != cmd.Name || len(again.Args) != len(cmd.Args) {
				t.Fatalf("re-read %q as %q %q (%d args, want %d)", cmd.Wire, again.Tag, again.Name, len(again.Args), len(cmd.Args))
			}
			for i := range cmd.Args {
				if !bytes.Equal(again.Args[i].Value, cmd.Args[i].Value) {
					t.Fatalf("arg %d: %q became %q", i, cmd.Args[i].Value, again.Args[i].Value)
				}
			}
		}
	})
}

// FuzzDecodeMailbox: a decoded name is valid UTF-8 without control
// characters.
func FuzzDecodeMailbox(f *testing.F) {
	for _, s := range []string{"INBOX", "&ZeVnLIqe-", "a&-b", "&Jjo", "&2D3eAA-", "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		name, err := DecodeMailbox(raw)
		if err != nil {
			return
		}
		if !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl) {
			t.Fatalf("DecodeMailbox(%q) = %q", raw, name)
		}
	})
}

func FuzzLexTail(f *testing.F) {
	for _, s := range []string{``, ` (\Seen) "02-Jan-2026 15:04:05 +0000" {12}`, ` {3+}`, ` ~{5}`, ` ((`, ` "x\"y" {99999999999}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		toks, lit, err := LexTail(b)
		if err == nil && lit != nil && lit.Size < 0 {
			t.Fatalf("negative literal size")
		}
		_ = toks
	})
}

// FuzzMailboxUTF8: a UTF-8 name (UTF8=ACCEPT) with its "&" escaped reads
// back through DecodeMailbox as itself, so the library, which reads
// modified UTF-7, gets the name the client meant.
func FuzzMailboxUTF8(f *testing.F) {
	for _, s := range []string{"Café", "X&Y", "&AOk-", "&-", "INBOX", "a\x01b", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, err := DecodeMailboxUTF8([]byte(s))
		if err != nil {
			return
		}
		back, err := DecodeMailbox(EscapeAmpersands([]byte(s)))
		if err != nil || back != name {
			t.Fatalf("%q: escaped reads %q, %v", s, back, err)
		}
	})
}
