package pop3

import (
	"bufio"
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// Limits on what a client may send.
const (
	// maxCommandLine is the longest command line accepted, CRLF included
	// (RFC 2449 section 4).
	maxCommandLine = 255
	// maxAuthLine is the longest AUTH command or SASL response line,
	// CRLF included: RFC 5034 lets responses exceed the command limit,
	// and some clients send long initial responses.
	maxAuthLine = 8192
	// maxDiscard is how much of an overlong line is skipped, looking for
	// its end, before the connection is closed instead.
	maxDiscard = 64 << 10
	// maxKeyword is the longest keyword recognised as a command name.
	// RFC 1939 keywords have 3 or 4 characters; longer ones are still
	// parsed so that they get "unknown command" rather than a syntax error.
	maxKeyword = 16
)

var (
	errSyntax      = errors.New("syntax error")
	errLineTooLong = errors.New("line too long")
	// errLineFlood means an overlong line went on past maxDiscard.
	errLineFlood = errors.New("line far too long")
)

// command is one parsed POP3 command line.
type command struct {
	// name is the keyword in upper case.
	name string
	// args are the space-separated arguments.
	args []string
	// rest is everything after the keyword and the space that follows it,
	// verbatim. PASS uses it, because RFC 1939 section 7 lets a password
	// contain spaces.
	rest string
}

// parseCommand parses a command line without its line ending. Control
// characters anywhere in the line, an empty line and a keyword that is not
// 1 to maxKeyword ASCII letters are syntax errors.
func parseCommand(line []byte) (command, error) {
	if len(line) == 0 || len(line) > maxAuthLine {
		return command{}, errSyntax
	}
	for _, c := range line {
		if c < 0x20 || c == 0x7f {
			return command{}, errSyntax
		}
	}
	kw, rest, hasRest := bytes.Cut(line, []byte{' '})
	if len(kw) == 0 || len(kw) > maxKeyword {
		return command{}, errSyntax
	}
	for _, c := range kw {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return command{}, errSyntax
		}
	}
	cmd := command{name: strings.ToUpper(string(kw))}
	if hasRest {
		cmd.rest = string(rest)
		// Several spaces between arguments and a trailing space are
		// tolerated: some clients send "STAT " or "LIST  1".
		for _, f := range strings.Split(cmd.rest, " ") {
			if f != "" {
				cmd.args = append(cmd.args, f)
			}
		}
	}
	return cmd, nil
}

// parseNumber parses a message number or a line count: decimal digits
// only, no sign, at most 9 digits (far beyond any maildrop).
func parseNumber(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// readLine reads one line of at most limit octets, the line ending
// included, and returns it without the CRLF (or bare LF). A longer line is
// skipped through its end and reported as errLineTooLong; if it goes on
// for more than maxDiscard octets, errLineFlood is returned and the caller
// should close the connection.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > limit {
			if err == nil {
				return nil, errLineTooLong
			}
			return nil, discardLine(r, len(line)+len(chunk), err)
		}
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// discardLine skips the rest of an overlong line, of which seen octets
// were read already; err is the error of the last read.
func discardLine(r *bufio.Reader, seen int, err error) error {
	for errors.Is(err, bufio.ErrBufferFull) {
		if seen > maxDiscard {
			return errLineFlood
		}
		var chunk []byte
		chunk, err = r.ReadSlice('\n')
		seen += len(chunk)
	}
	if err != nil {
		return err
	}
	return errLineTooLong
}
