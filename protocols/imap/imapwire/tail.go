package imapwire

// LexTail reads a line that continues a command after a literal the
// caller streamed (the rest of an APPEND with several messages, RFC
// 3502): its tokens, and the literal it announces at its end, if any.
// The line is bounded by the caller (Reader.ReadLine); lists must close
// on the line.
func LexTail(b []byte) ([]Token, *LiteralHeader, *Error) {
	text, lit, litErr := splitLiteral(b)
	cmd := &Command{}
	lx := lexer{lim: DefaultLimits()}
	if err := lx.lex(text, 0, cmd); err != nil {
		return nil, lit, err
	}
	if litErr != nil {
		return nil, lit, litErr
	}
	if lx.depth != 0 {
		return nil, lit, &Error{Text: "Unbalanced parentheses"}
	}
	return cmd.Args, lit, nil
}
