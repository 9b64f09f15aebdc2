// Package imapwire reads IMAP commands off a client connection: the
// framing (lines and literals), the tokens (atoms, quoted strings,
// literals, parenthesised lists) and the limits that keep a hostile client
// from making the server buffer, recurse or stall. It is the first part of
// the project's own IMAP codec (docs/architecture.md, "IMAP: the library's
// limits"), written here; it shares no code with go-imap's internal one.
//
// Invariants:
//   - A command is read whole or refused whole: a refusal (*Error) leaves
//     the reader at the start of the next command, having skipped the
//     refused command's remaining lines and non-synchronizing literals
//     (at most Limits.MaxDiscard bytes; beyond that the error is Fatal).
//   - A synchronizing literal is accepted (Reader.Continue called, which
//     sends "+") only once it is known to fit; a refused one is answered
//     at once, and the client does not send it (RFC 9051 section 7.5).
//   - Nothing here allocates more than the limits allow per command.
package imapwire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Limits bound one command. A zero field takes its DefaultLimits value.
type Limits struct {
	// MaxCommand bounds the bytes of a command's lines plus its buffered
	// literals, and of the command as Command.Wire re-encodes it.
	MaxCommand int
	// MaxLiteral bounds one buffered literal (every literal but one that
	// Reader.Stream hands to the caller).
	MaxLiteral int64
	// MaxDepth bounds the nesting of parenthesised lists.
	MaxDepth int
	// MaxTokens bounds the tokens of one command.
	MaxTokens int
	// MaxDiscard bounds the non-synchronizing literals the reader skips
	// of a refused command to stay in step with the client; a refused
	// command that would need more is Fatal.
	MaxDiscard int64
	// MaxLineDiscard bounds one over-long line the reader skips (it is
	// read in pieces, never held); a longer line is Fatal.
	MaxLineDiscard int64
}

// DefaultLimits are the limits a zero Limits field takes: commands under
// go-imap's own 50 KiB command bound, 4 KiB literals outside APPEND (the
// LITERAL- bound of RFC 7888), lists 32 deep, 64 KiB of literals and
// 1 MiB of an over-long line skipped of a refused command before the
// connection is closed instead.
func DefaultLimits() Limits {
	return Limits{MaxCommand: 48 << 10, MaxLiteral: 4096, MaxDepth: 32, MaxTokens: 4096, MaxDiscard: 64 << 10, MaxLineDiscard: 1 << 20}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxCommand <= 0 {
		l.MaxCommand = d.MaxCommand
	}
	if l.MaxLiteral <= 0 {
		l.MaxLiteral = d.MaxLiteral
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxTokens <= 0 {
		l.MaxTokens = d.MaxTokens
	}
	if l.MaxDiscard <= 0 {
		l.MaxDiscard = d.MaxDiscard
	}
	if l.MaxLineDiscard <= 0 {
		l.MaxLineDiscard = d.MaxLineDiscard
	}
	return l
}

// Kind is the kind of a Token.
type Kind uint8

// The token kinds.
const (
	// KindAtom is a run of characters that are not specials: atoms,
	// numbers, sequence sets, NIL, BODY[...] section specifiers.
	KindAtom Kind = iota + 1
	// KindQuoted is a quoted string; Token.Value is its content.
	KindQuoted
	// KindLiteral is a literal; Token.Value is its content.
	KindLiteral
	// KindOpen and KindClose are "(" and ")".
	KindOpen
	KindClose
)

// Token is one token of a command's arguments.
type Token struct {
	Kind Kind
	// Value is the atom's text or the string's content (unescaped).
	Value []byte
	// Depth is the list nesting the token is in (0 at top level; an
	// opening parenthesis has the depth of its contents' parent).
	Depth int
	// Start and End are the token's byte range in Command.Wire, so that
	// a caller can forward the command with some arguments cut out.
	Start, End int
}

// IsString reports whether the token is an astring (atom, quoted or
// literal).
func (t Token) IsString() bool {
	return t.Kind == KindAtom || t.Kind == KindQuoted || t.Kind == KindLiteral
}

// LiteralHeader describes a literal announced by "{N}", "{N+}" or a
// literal8 "~{N}".
type LiteralHeader struct {
	Size     int64
	NonSync  bool
	Literal8 bool
}

// Marker returns the literal's announcement as it is written on the wire,
// synchronizing or not as sync says.
func (h LiteralHeader) Marker(sync bool) string {
	s := "{" + strconv.FormatInt(h.Size, 10)
	if !sync {
		s += "+"
	}
	s += "}"
	if h.Literal8 {
		s = "~" + s
	}
	return s
}

// Command is one command read from the client.
type Command struct {
	Tag string
	// Name is the command name in upper case; "UID FETCH" and the like
	// for UID commands.
	Name string
	// Args are the tokens after the name.
	Args []Token
	// Wire is the command re-encoded for an IMAP server that takes no
	// synchronizing literals: buffered literals become quoted strings
	// where they can (no CR, LF or NUL) and non-synchronizing literals
	// otherwise. It ends with CRLF, unless Pending is set: then it ends
	// where Pending's announcement stood.
	Wire []byte
	// Pending is set when Reader.Stream chose to stream a literal: the
	// reader stopped before its content, which the caller reads from
	// Reader.Buffered, before the rest of the command (Reader.ReadLine).
	Pending *LiteralHeader
}

// Error is a command the reader refused. The reader is in step with the
// client again, at the start of the next command, unless Fatal.
type Error struct {
	// Tag is the refused command's tag, "" when it could not be read.
	Tag string
	// No says NO (with Code); otherwise the answer is BAD.
	No   bool
	Code string
	Text string
	// Fatal says the reader could not skip the rest of the command: the
	// connection must end (with BYE).
	Fatal bool
}

func (e *Error) Error() string { return "imap command refused: " + e.Text }

// ErrTooLong is the cause of a line over the limit (Reader.ReadLine).
var ErrTooLong = errors.New("imapwire: line too long")

// Reader reads commands from a client.
type Reader struct {
	br  *bufio.Reader
	lim Limits
	// Continue, if set, is called when a synchronizing literal is
	// accepted, to send the client a continuation request.
	Continue func() error
	// Stream, if set, is asked about every literal whether the caller
	// streams it (true) instead of the reader buffering it; cmd holds
	// what was read so far (Tag, Name, Args). Only the literal the
	// caller streams escapes Limits.MaxLiteral.
	Stream func(cmd *Command, h LiteralHeader) bool
}

// NewReader returns a reader of commands from br.
func NewReader(br *bufio.Reader, lim Limits) *Reader {
	return &Reader{br: br, lim: lim.withDefaults()}
}

// Reset makes the reader read from br (after STARTTLS).
func (r *Reader) Reset(br *bufio.Reader) { r.br = br }

// Buffered returns the buffered reader commands are read from, for the
// caller to stream a pending literal.
func (r *Reader) Buffered() *bufio.Reader { return r.br }

// Limits returns the reader's limits, defaults filled in.
func (r *Reader) Limits() Limits { return r.lim }

// ReadLine reads one line of at most max bytes (without its line end),
// for the lines that are not commands: the rest of a command after a
// streamed literal, IDLE's DONE, SASL responses. A longer line is skipped
// up to Limits.MaxLineDiscard and reported as ErrTooLong.
func (r *Reader) ReadLine(max int) ([]byte, error) {
	l, err := r.readLine(max)
	if err != nil {
		return nil, err
	}
	if l.over {
		return nil, ErrTooLong
	}
	return l.text, nil
}

// line is one line as read: its text, or when over the limit its first
// and last bytes (enough for a tag and a literal announcement).
type line struct {
	text       []byte
	over       bool
	head, tail []byte
	skipped    int64
}

const edgeBytes = 64

// readLine reads a line of at most max bytes without its CRLF (or bare
// LF). An over-long line is skipped whole, up to MaxLineDiscard bytes.
func (r *Reader) readLine(max int) (line, error) {
	var l line
	var buf []byte
	for {
		frag, err := r.br.ReadSlice('\n')
		if l.over {
			l.skipped += int64(len(frag))
			l.tail = appendTail(l.tail, frag)
		} else if len(buf)+len(frag) > max+2 {
			l.over = true
			all := append(buf, frag...)
			l.head = append([]byte(nil), all[:min(edgeBytes, len(all))]...)
			l.tail = appendTail(nil, all)
			l.skipped = int64(len(all))
			buf = nil
		} else {
			buf = append(buf, frag...)
		}
		switch {
		case err == nil:
			if l.over {
				l.tail = trimEOL(l.tail)
				return l, nil
			}
			buf = trimEOL(buf)
			if len(buf) > max {
				l.over, l.head, l.tail, l.skipped = true, buf[:min(edgeBytes, len(buf))], appendTail(nil, buf), int64(len(buf))
				return l, nil
			}
			l.text = buf
			return l, nil
		case errors.Is(err, bufio.ErrBufferFull):
			if l.over && l.skipped > r.lim.MaxLineDiscard {
				return l, &Error{Text: "Command line too long", Fatal: true}
			}
		default:
			if err == io.EOF && (len(buf) > 0 || l.over) {
				err = io.ErrUnexpectedEOF
			}
			return l, err
		}
	}
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

func appendTail(tail, frag []byte) []byte {
	tail = append(tail, frag...)
	if len(tail) > edgeBytes {
		tail = append(tail[:0], tail[len(tail)-edgeBytes:]...)
	}
	return tail
}

// ReadCommand reads the next command. A refused command is returned as
// *Error (see Error.Fatal); other errors are the connection's.
func (r *Reader) ReadCommand() (*Command, error) {
	cmd := &Command{}
	lx := lexer{lim: r.lim}
	budget := r.lim.MaxCommand
	var refused *Error
	var discarded int64
	refuse := func(e *Error) {
		if refused == nil {
			e.Tag = cmd.Tag
			refused = e
		}
	}
	first := true
	for {
		l, err := r.readLine(max(budget, 0))
		if err != nil {
			var we *Error
			if errors.As(err, &we) {
				if first && cmd.Tag == "" {
					cmd.Tag = tagOf(l.head)
				}
				refuse(we)
				return nil, refused
			}
			return nil, err
		}
		text := l.text
		if l.over {
			text = l.tail
			if first {
				cmd.Tag = tagOf(l.head)
			}
			refuse(&Error{Text: "Command line too long"})
		} else {
			budget -= len(text) + 2
		}
		var lit *LiteralHeader
		var litErr *Error
		text, lit, litErr = splitLiteral(text)
		if refused == nil && !l.over {
			if first {
				rest, err := cmd.readName(text)
				if err != nil {
					refuse(err)
				}
				text = rest
			}
			if refused == nil {
				if err := lx.lex(text, len(cmd.Wire), cmd); err != nil {
					refuse(err)
				}
			}
			if refused == nil && litErr != nil {
				refuse(litErr)
			}
			cmd.Wire = append(cmd.Wire, text...)
		} else if first && cmd.Tag == "" {
			cmd.Tag = tagOf(text)
		}
		first = false
		if lit == nil {
			break
		}
		if refused == nil {
			switch {
			case lit.Literal8 && cmd.Name != "APPEND":
				refuse(&Error{Text: "literal8 is only accepted in APPEND"})
			case r.Stream != nil && r.Stream(cmd, *lit):
				cmd.Pending = lit
				return cmd, nil
			case lit.Size > r.lim.MaxLiteral || lit.Size > int64(budget):
				refuse(&Error{No: true, Code: "TOOBIG", Text: fmt.Sprintf("Literals are limited to %d bytes in this command", min(r.lim.MaxLiteral, int64(max(budget, 0))))})
			case len(cmd.Args) >= r.lim.MaxTokens:
				refuse(&Error{Text: "Too many arguments"})
			}
		}
		if refused != nil {
			// Skip the rest of a refused command: a client waiting for a
			// continuation has ended it; one that does not wait sends the
			// literal, which is skipped.
			if !lit.NonSync {
				return nil, refused
			}
			discarded += lit.Size
			if discarded > r.lim.MaxDiscard {
				refused.Fatal = true
				return nil, refused
			}
			if _, err := io.CopyN(io.Discard, r.br, lit.Size); err != nil {
				return nil, err
			}
			continue
		}
		if !lit.NonSync && r.Continue != nil {
			if err := r.Continue(); err != nil {
				return nil, err
			}
		}
		content := make([]byte, lit.Size)
		if _, err := io.ReadFull(r.br, content); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		budget -= len(content)
		start := len(cmd.Wire)
		cmd.Wire = appendString(cmd.Wire, content)
		cmd.Args = append(cmd.Args, Token{Kind: KindLiteral, Value: content, Depth: lx.depth, Start: start, End: len(cmd.Wire)})
	}
	if refused != nil {
		return nil, refused
	}
	if lx.depth != 0 {
		return nil, &Error{Tag: cmd.Tag, Text: "Unbalanced parentheses"}
	}
	cmd.Wire = append(cmd.Wire, '\r', '\n')
	if len(cmd.Wire) > r.lim.MaxCommand+2 {
		return nil, &Error{Tag: cmd.Tag, Text: "Command too long"}
	}
	return cmd, nil
}

// tagOf returns the tag at the start of a line, or "" when it has none
// that is valid.
func tagOf(b []byte) string {
	end := bytes.IndexByte(b, ' ')
	if end < 0 {
		end = len(b)
	}
	if !validTag(b[:end]) {
		return ""
	}
	return string(b[:end])
}

func validTag(t []byte) bool {
	if len(t) == 0 || len(t) > 64 {
		return false
	}
	for _, c := range t {
		if !isAtomChar(c) || c == '+' {
			return false
		}
	}
	return true
}

// isAtomChar reports whether c may appear in an atom (RFC 9051's
// ATOM-CHAR, with ']' which resp-specials allow in astrings).
func isAtomChar(c byte) bool {
	switch c {
	case '(', ')', '{', ' ', '%', '*', '"', '\\':
		return false
	}
	return c > 0x1f && c != 0x7f
}

// readName reads the tag and the command name (with UID's subcommand)
// from the first line and returns the rest of it.
func (c *Command) readName(b []byte) ([]byte, *Error) {
	sp := bytes.IndexByte(b, ' ')
	if sp < 0 || !validTag(b[:sp]) {
		if len(b) == 0 {
			return nil, &Error{Text: "Empty command line"}
		}
		return nil, &Error{Text: "Missing or invalid tag"}
	}
	c.Tag = string(b[:sp])
	b = b[sp+1:]
	name, rest := cutAtom(b)
	if name == "" {
		return nil, &Error{Text: "Missing command name"}
	}
	c.Name = upper(name)
	if c.Name == "UID" {
		if len(rest) == 0 || rest[0] != ' ' {
			return nil, &Error{Text: "Missing UID command name"}
		}
		sub, r2 := cutAtom(rest[1:])
		if sub == "" {
			return nil, &Error{Text: "Missing UID command name"}
		}
		c.Name = "UID " + upper(sub)
		rest = r2
	}
	c.Wire = append(c.Wire, b[:len(b)-len(rest)]...)
	c.Wire = append([]byte(c.Tag+" "), c.Wire...)
	return rest, nil
}

func cutAtom(b []byte) (string, []byte) {
	i := 0
	for i < len(b) && isAtomChar(b[i]) && b[i] != ']' && i < 64 {
		i++
	}
	if i < len(b) && b[i] != ' ' {
		return "", b
	}
	return string(b[:i]), b[i:]
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// splitLiteral cuts a literal announcement off the end of a line.
func splitLiteral(b []byte) ([]byte, *LiteralHeader, *Error) {
	if len(b) == 0 || b[len(b)-1] != '}' {
		return b, nil, nil
	}
	open := bytes.LastIndexByte(b, '{')
	if open < 0 {
		return b, nil, nil
	}
	h := &LiteralHeader{}
	digits := b[open+1 : len(b)-1]
	if n := len(digits); n > 0 && digits[n-1] == '+' {
		h.NonSync = true
		digits = digits[:n-1]
	}
	start := open
	if open > 0 && b[open-1] == '~' {
		h.Literal8 = true
		start--
	}
	if len(digits) == 0 {
		return b, nil, nil
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return b, nil, nil
		}
	}
	n, err := strconv.ParseUint(string(digits), 10, 63)
	if err != nil || n > 1<<32-1 {
		// Too large for any literal (RFC 9051's number is 32 bits): the
		// client still gets its answer at once, and skipping is refused.
		h.Size = 1<<63 - 1
		return b[:start], h, &Error{Text: "Literal size out of range"}
	}
	h.Size = int64(n)
	if start == 0 || (b[start-1] != ' ' && b[start-1] != '(') {
		// A literal is an argument of its own (RFC 9051 section 4.3).
		return b[:start], h, &Error{Text: "Literal announced inside another argument"}
	}
	return b[:start], h, nil
}

// appendString appends s as a quoted string when it can be one, else as
// a non-synchronizing literal.
func appendString(dst, s []byte) []byte {
	if bytes.IndexAny(s, "\r\n\x00") >= 0 {
		dst = append(dst, '{')
		dst = strconv.AppendInt(dst, int64(len(s)), 10)
		dst = append(dst, "+}\r\n"...)
		return append(dst, s...)
	}
	dst = append(dst, '"')
	for _, c := range s {
		if c == '"' || c == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return append(dst, '"')
}

// Without returns a copy of the command's Wire with the bytes from start
// to end (token offsets) cut out, together with the space that separated
// them from the previous argument (or, at the start of a list, from the
// next one): what the front forwards once it has taken an extension's
// arguments for itself.
func (c *Command) Without(start, end int) []byte {
	return Cut(c.Wire, start, end)
}

// Cut returns a copy of wire with the bytes from start to end cut out,
// together with the space before them (or, when none, the one after).
// Cutting several ranges of one command goes from the last to the
// first, so that the earlier offsets stay valid.
func Cut(wire []byte, start, end int) []byte {
	if start < 0 || end > len(wire) || start > end {
		return append([]byte(nil), wire...)
	}
	switch {
	case start > 0 && wire[start-1] == ' ':
		start--
	case end < len(wire) && wire[end] == ' ':
		end++
	}
	out := make([]byte, 0, len(wire)-(end-start))
	out = append(out, wire[:start]...)
	return append(out, wire[end:]...)
}
