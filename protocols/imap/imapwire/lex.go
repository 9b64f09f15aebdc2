package imapwire

// lexer splits command lines into tokens, keeping the list depth across
// the lines of one command.
type lexer struct {
	lim   Limits
	depth int
}

// lex appends the tokens of b (a line, or the part of one between
// literals) to cmd.Args; b starts at offset base of cmd.Wire.
func (lx *lexer) lex(b []byte, base int, cmd *Command) *Error {
	for i := 0; i < len(b); {
		c := b[i]
		if len(cmd.Args) >= lx.lim.MaxTokens {
			return &Error{Text: "Too many arguments"}
		}
		switch {
		case c == ' ':
			i++
		case c == '(':
			if lx.depth >= lx.lim.MaxDepth {
				return &Error{Text: "Lists nested too deep"}
			}
			cmd.Args = append(cmd.Args, Token{Kind: KindOpen, Depth: lx.depth, Start: base + i, End: base + i + 1})
			lx.depth++
			i++
		case c == ')':
			if lx.depth == 0 {
				return &Error{Text: "Unbalanced parentheses"}
			}
			lx.depth--
			cmd.Args = append(cmd.Args, Token{Kind: KindClose, Depth: lx.depth, Start: base + i, End: base + i + 1})
			i++
		case c == '"':
			v, n, err := unquote(b[i:])
			if err != nil {
				return err
			}
			cmd.Args = append(cmd.Args, Token{Kind: KindQuoted, Value: v, Depth: lx.depth, Start: base + i, End: base + i + n})
			i += n
		case c == '{' || c == '\\' && !atomContinues(b, i):
			return &Error{Text: "Unexpected character " + string(rune(c))}
		case c < 0x20 || c == 0x7f:
			return &Error{Text: "Control character in command"}
		default:
			j := i
			for j < len(b) && atomContinues(b, j) {
				j++
			}
			if j == i {
				j++ // a lone special such as '%' or '*' (LIST patterns)
			}
			cmd.Args = append(cmd.Args, Token{Kind: KindAtom, Value: b[i:j], Depth: lx.depth, Start: base + i, End: base + j})
			i = j
		}
	}
	return nil
}

// atomContinues reports whether b[i] continues an atom-like token. Atoms
// here are loose: LIST wildcards, flags (\Seen) and section specifiers
// (BODY[1.MIME]<0.10>) are single tokens too.
func atomContinues(b []byte, i int) bool {
	switch c := b[i]; c {
	case ' ', '(', ')', '"', '{':
		return false
	default:
		return c > 0x1f && c != 0x7f
	}
}

// unquote reads a quoted string at the start of b; it returns the
// content and the bytes consumed.
func unquote(b []byte) ([]byte, int, *Error) {
	var v []byte
	for i := 1; i < len(b); i++ {
		switch c := b[i]; c {
		case '"':
			return v, i + 1, nil
		case '\\':
			i++
			if i == len(b) || (b[i] != '"' && b[i] != '\\') {
				return nil, 0, &Error{Text: "Invalid escape in quoted string"}
			}
			v = append(v, b[i])
		case '\r', '\n', 0:
			return nil, 0, &Error{Text: "Invalid character in quoted string"}
		default:
			v = append(v, c)
		}
	}
	return nil, 0, &Error{Text: "Unterminated quoted string"}
}
