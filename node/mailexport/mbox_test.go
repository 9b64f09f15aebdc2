package mailexport

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node/mailimport"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestMboxFromLine: the "From " line carries the Return-Path's address
// when there is a usable one, and the internal date in UTC.
func TestMboxFromLine(t *testing.T) {
	date := time.Date(2026, 1, 3, 1, 5, 34, 0, time.FixedZone("x", 3600))
	for header, want := range map[string]string{
		"Return-Path: <b@x.test>\r\n":                   "From b@x.test Sat Jan  3 00:05:34 2026\n",
		"return-path: b@x.test\r\n":                     "From b@x.test Sat Jan  3 00:05:34 2026\n",
		"Return-Path: <>\r\n":                           "From MAILER-DAEMON Sat Jan  3 00:05:34 2026\n",
		"Return-Path: <a b@x.test>\r\n":                 "From MAILER-DAEMON Sat Jan  3 00:05:34 2026\n",
		"Subject: no return path\r\n":                   "From MAILER-DAEMON Sat Jan  3 00:05:34 2026\n",
		"Subject: x\r\n\r\nReturn-Path: <b@x.test>\r\n": "From MAILER-DAEMON Sat Jan  3 00:05:34 2026\n",
	} {
		got := string(appendMbox(nil, []byte(header+"\r\nbody\r\n"), nil, date))
		if line, _, _ := strings.Cut(got, "\n"); line+"\n" != want {
			t.Errorf("%q: From line %q, want %q", header, line, want)
		}
	}
}

// FuzzMboxRoundTrip: any message written in mbox form reads back through
// mailnode import's reader as one message with its flags and date, and
// byte for byte (but the stored mbox status fields) when mbox can carry
// it: the message ends with a line break and has no CR before one.
func FuzzMboxRoundTrip(f *testing.F) {
	for _, m := range testMessages(time.Now()) {
		f.Add([]byte(m.body))
	}
	f.Add([]byte("From x\r\n>From y\r\n\r\nFrom z\r\n"))
	f.Add([]byte("\r\nbody only\r\n"))
	f.Add([]byte("Status: RO\r\n"))
	f.Add([]byte(""))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 64<<10 {
			return
		}
		if err := mboxRoundTrip(dir, raw); err != nil {
			t.Error(err)
		}
	})
}

// TestMboxRoundTripSmallMessages runs FuzzMboxRoundTrip's check on every
// message of up to four pieces of the bytes that matter to mbox form
// (line breaks, folding, header syntax, "From " lines): the two inputs
// the fuzzer found in CI were of three and four such pieces.
func TestMboxRoundTripSmallMessages(t *testing.T) {
	pieces := []string{"\r", "\n", "\r\n", " ", "\t", ":", ">", "From ", "a", "Status: R"}
	dir := t.TempDir()
	var walk func(msg string, depth int) bool
	walk = func(msg string, depth int) bool {
		if err := mboxRoundTrip(dir, []byte(msg)); err != nil {
			t.Errorf("%q: %v", msg, err)
			return false
		}
		if depth == 0 {
			return true
		}
		for _, p := range pieces {
			if !walk(msg+p, depth-1) {
				return false
			}
		}
		return true
	}
	walk("", 4)
}

// mboxRoundTrip writes raw (CRLF-normalized, as the store holds it) in
// mbox form with flags and a date, reads it back with mailnode import's
// reader, and says what did not come back.
func mboxRoundTrip(dir string, raw []byte) error {
	date := time.Date(2026, 1, 3, 1, 5, 34, 0, time.UTC)
	flags := []string{`\Seen`, `\Deleted`, "$Label1"}
	msg := schema.NormalizeCRLF(raw)
	path := filepath.Join(dir, "f.mbox")
	if err := os.WriteFile(path, appendMbox(nil, msg, flags, date), 0o600); err != nil {
		return err
	}
	var got []mailimport.Message
	err := (&mailimport.Mbox{Path: path}).Messages(context.Background(), "INBOX", func(m mailimport.Message) error {
		got = append(got, m)
		return nil
	})
	if err != nil || len(got) != 1 {
		return fmt.Errorf("read back %d messages, %v", len(got), err)
	}
	if !sameFlags(got[0].Flags, flags) || !got[0].Date.Equal(date) {
		return fmt.Errorf("flags %q date %v", got[0].Flags, got[0].Date)
	}
	if bytes.HasSuffix(msg, []byte("\r\n")) && !bytes.Contains(msg, []byte("\r\r\n")) {
		if data := schema.NormalizeCRLF(got[0].Data); string(data) != withoutStatus(string(msg)) {
			return fmt.Errorf("read back %q, want %q", data, withoutStatus(string(msg)))
		}
	}
	return nil
}
