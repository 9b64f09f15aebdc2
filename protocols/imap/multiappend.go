package imap

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// APPEND and MULTIAPPEND (RFC 3502), read by the front. The front
// answers every synchronizing literal of APPEND itself, once it is known
// to fit (each message at most APPENDLIMIT, all of one command together
// too, at most maxAppendMessages of them), and reads the whole command
// before anything is stored:
//   - with one message, the command goes to the library as before (a
//     non-synchronizing literal), which stores it and answers with
//     APPENDUID and the selected mailbox's new EXISTS;
//   - with several, the front stores them itself in one store command
//     (Account.AppendBatch: all or none) and answers
//     [APPENDUID uidvalidity uid-set]. The selected mailbox's EXISTS then
//     comes with the next command, as for mail delivered meanwhile.
// A refused message (too large, malformed flags or date) refuses the
// command and stores nothing; a synchronizing literal refused is never
// sent by the client, a non-synchronizing one is read and dropped within
// the reader's discard bound, else the connection ends (RFC 7888
// section 4).

// maxAppendMessages bounds the messages of one APPEND.
const maxAppendMessages = 1000

// appendDateLayout is RFC 3501's date-time, the day space-padded or not.
const appendDateLayout = "_2-Jan-2006 15:04:05 -0700"

// multiAppendCapability is advertised with the front's capabilities.
const multiAppendCapability = "MULTIAPPEND"

// appendItem is one message of an APPEND as read.
type appendItem struct {
	flags []imap.Flag
	date  time.Time
	data  []byte
}

// appendMessages runs an APPEND whose first message literal is pending.
// False ends the connection.
func (f *frontConn) appendMessages(cmd *imapwire.Command) bool {
	start := time.Now()
	first, ok := f.readAppendLiteral(cmd.Pending)
	if !ok {
		return false
	}
	rest, ok := f.appendLine()
	if !ok {
		return false
	}
	answer := func(status string) bool {
		f.observe("APPEND", strings.HasPrefix(status, "OK"), start)
		return f.writeLine(cmd.Tag+" "+status) == nil
	}
	toks, lit, lerr := imapwire.LexTail(rest)
	// RFC 6855 section 4: UTF8 (~{n}...) wraps the message of one
	// APPEND; ")" closes it.
	prefix := cmd.Args[1:]
	utf8Data := false
	if n := len(prefix); n >= 2 && prefix[n-1].Kind == imapwire.KindOpen && prefix[n-2].Kind == imapwire.KindAtom &&
		strings.EqualFold(string(prefix[n-2].Value), "UTF8") {
		prefix = prefix[:n-2]
		utf8Data = true
	}
	if utf8Data && (string(rest) != ")" || !cmd.Pending.Literal8) {
		if !f.skipAppendRest(lit) {
			f.writeLine(cmd.Tag + " BAD [CLIENTBUG] UTF8 takes one message literal")
			f.bye("Too much data to skip")
			return false
		}
		return answer("BAD [CLIENTBUG] UTF8 takes one message literal8 (~{n}), closed by \")\"")
	}
	if utf8Data || lit == nil && lerr == nil && len(toks) == 0 {
		// One message: the library's. Its flags and date are checked
		// first: the library would refuse them before reading the
		// literal and then read the message as commands.
		if _, err := parseAppendPrefix(prefix); err != nil {
			return answer("BAD [CLIENTBUG] " + err.Error())
		}
		head := append(cmd.Wire, cmd.Pending.Marker(false)...)
		head = append(head, '\r', '\n')
		// Otherwise rest holds white space at most, which the library
		// must not see: after a message literal it answers nothing to
		// anything but CRLF (go-imap v2.0.0-beta.8, handleAppend), and
		// the front would wait for that answer for ever.
		tail := []byte("\r\n")
		if utf8Data {
			tail = append(append([]byte(nil), rest...), tail...) // rest is the reader's
		}
		// The message goes as read, not copied after the command line:
		// the library reads it into a buffer of its own anyway.
		for _, piece := range [][]byte{head, first, tail} {
			if err := f.forward(piece); err != nil {
				return false
			}
		}
		return f.await(cmd)
	}
	limit := int64(f.srv.appendLimit())
	item, perr := parseAppendPrefix(cmd.Args[1:])
	item.data = first
	items := []appendItem{item}
	total := int64(len(first))
	var refusal string
	switch {
	case perr != nil:
		refusal = "BAD [CLIENTBUG] " + perr.Error()
	case cmd.Pending.Literal8:
		refusal = "BAD [CLIENTBUG] literal8 is not accepted with several messages"
	}
	for refusal == "" {
		if lerr != nil {
			refusal = "BAD [CLIENTBUG] " + lerr.Text
			break
		}
		if lit == nil {
			if len(toks) > 0 {
				refusal = "BAD [CLIENTBUG] Syntax error after an APPEND message"
			}
			break
		}
		next, err := parseAppendPrefix(toks)
		switch {
		case err != nil:
			refusal = "BAD [CLIENTBUG] " + err.Error()
		case lit.Literal8:
			refusal = "BAD [CLIENTBUG] literal8 is not accepted with several messages"
		case lit.Size > limit || total+lit.Size > limit:
			refusal = "NO [TOOBIG] The messages of one APPEND are limited to " + strconv.FormatInt(limit, 10) + " bytes together"
		case len(items) >= maxAppendMessages:
			refusal = "NO [LIMIT] Too many messages in one APPEND"
		}
		if refusal != "" {
			break
		}
		if next.data, ok = f.readAppendLiteral(lit); !ok {
			return false
		}
		total += lit.Size
		items = append(items, next)
		if rest, ok = f.appendLine(); !ok {
			return false
		}
		toks, lit, lerr = imapwire.LexTail(rest)
	}
	if refusal != "" {
		if !f.skipAppendRest(lit) {
			f.writeLine(cmd.Tag + " " + refusal)
			f.bye("Too much data to skip")
			return false
		}
		return answer(refusal)
	}
	if ok, alive := f.rated(cmd.Tag); !ok {
		return alive
	}
	sess := f.librarySession()
	if sess == nil {
		return answer("BAD Not authenticated")
	}
	name, err := f.decodeName(cmd.Args[0].Value)
	if err != nil {
		return answer("BAD [CLIENTBUG] Mailbox name " + imapwire.Reason(err))
	}
	res, err := sess.appendBatch(name, items)
	if err != nil {
		return answer(failedStatus(err))
	}
	uids := make([]uint32, len(res.UIDs))
	for i, u := range res.UIDs {
		uids[i] = uint32(u)
	}
	return answer("OK [APPENDUID " + strconv.FormatUint(uint64(res.UIDValidity), 10) + " " + orderedSet(uids) + "] APPEND completed")
}

// readAppendLiteral reads a message literal, first asking for it when it
// is synchronizing.
func (f *frontConn) readAppendLiteral(h *imapwire.LiteralHeader) ([]byte, bool) {
	if !h.NonSync {
		if f.writeLine("+ Ready for literal data") != nil {
			return nil, false
		}
	}
	data := make([]byte, h.Size)
	if _, err := io.ReadFull(f.rd.Buffered(), data); err != nil {
		return nil, false
	}
	return data, true
}

// appendLine reads the line after a message literal.
func (f *frontConn) appendLine() ([]byte, bool) {
	rest, err := f.rd.ReadLine(maxContinuationLine)
	if err != nil {
		if errors.Is(err, imapwire.ErrTooLong) {
			f.bye("Line too long")
		}
		return nil, false
	}
	return rest, true
}

// skipAppendRest skips what is left of a refused APPEND: a synchronizing
// literal the client does not send (it waits for "+", and the refusal
// ends the command); non-synchronizing ones are read and dropped, with
// the lines between them, up to the reader's discard bound. False: the
// bound was reached, the connection must end.
func (f *frontConn) skipAppendRest(lit *imapwire.LiteralHeader) bool {
	budget := f.rd.Limits().MaxDiscard
	for lit != nil && lit.NonSync {
		if lit.Size > budget {
			return false
		}
		budget -= lit.Size
		if _, err := io.CopyN(io.Discard, f.rd.Buffered(), lit.Size); err != nil {
			return false
		}
		rest, err := f.rd.ReadLine(maxContinuationLine)
		if err != nil {
			return false
		}
		_, lit, _ = imapwire.LexTail(rest)
	}
	return true
}

// parseAppendPrefix reads what precedes a message literal of APPEND: an
// optional flag list and an optional date-time.
func parseAppendPrefix(toks []imapwire.Token) (appendItem, error) {
	var it appendItem
	i := 0
	if i < len(toks) && toks[i].Kind == imapwire.KindOpen {
		depth := toks[i].Depth
		i++
		for ; i < len(toks) && toks[i].Kind != imapwire.KindClose; i++ {
			if toks[i].Kind != imapwire.KindAtom || toks[i].Depth != depth+1 {
				return it, errors.New("APPEND flags must be a list of flags")
			}
			it.flags = append(it.flags, imap.Flag(toks[i].Value))
		}
		if i == len(toks) {
			return it, errors.New("APPEND flag list not closed")
		}
		i++
	}
	if i < len(toks) && toks[i].Kind == imapwire.KindQuoted {
		t, err := time.Parse(appendDateLayout, string(toks[i].Value))
		if err != nil {
			return it, errors.New("APPEND date-time is not in RFC 3501 form")
		}
		it.date = t
		i++
	}
	if i != len(toks) {
		return it, errors.New("Unexpected APPEND argument")
	}
	return it, nil
}

// appendBatch stores the messages of a MULTIAPPEND in one store command,
// all or none.
func (s *session) appendBatch(name string, items []appendItem) (schema.AppendBatchResult, error) {
	var res schema.AppendBatchResult
	msgs := make([]schema.AppendMessage, len(items))
	for i, it := range items {
		if len(it.data) == 0 {
			return res, noError(imap.ResponseCodeCannot, "Empty message")
		}
		flags, err := storeFlags(it.flags)
		if err != nil {
			return res, err
		}
		date := it.date
		if date.IsZero() {
			date = time.Now()
		}
		msgs[i] = schema.AppendMessage{Message: it.data, Flags: flags, Date: date}
	}
	err := s.runOnAccount(func(acct protocols.Account) error {
		ctx, cancel := s.opContext()
		defer cancel()
		mbox, err := acct.Mailbox(ctx, normalizeInbox(name))
		if errors.Is(err, schema.ErrNoSuchMailbox) {
			return noError(imap.ResponseCodeTryCreate, "No such mailbox")
		}
		if err != nil {
			return s.storeError("append", err)
		}
		res, err = acct.AppendBatch(ctx, mbox.ID, msgs)
		if errors.Is(err, schema.ErrNoSuchMailbox) {
			return noError(imap.ResponseCodeTryCreate, "No such mailbox")
		}
		return s.storeError("append", err)
	})
	return res, err
}
