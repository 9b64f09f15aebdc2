package imap

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// CONDSTORE and QRESYNC (RFC 7162). The library has neither: it rejects
// their arguments and cannot write MODSEQ, HIGHESTMODSEQ or VANISHED. The
// front lifts that in three ways (docs/architecture.md, "The front"):
//
//   - It reads the extensions' arguments itself (SELECT's CONDSTORE and
//     QRESYNC parameters, FETCH's MODSEQ item and CHANGEDSINCE and
//     VANISHED modifiers, STORE's UNCHANGEDSINCE), forwards the command
//     without them, and hands them to the session for that one command
//     (cmdExt), which acts on them: the library runs one command at a
//     time, so the session reads the front's state between two of them.
//   - The session writes FETCH and EXPUNGE responses through the
//     library, as before, and notes for each the MODSEQ (or, once
//     QRESYNC is on, the UID) the relay puts in: "* 3 FETCH (" becomes
//     "* 3 FETCH (MODSEQ (12) ", "* 3 EXPUNGE" becomes "* VANISHED 17".
//     The notes are taken in order; lines without one pass unchanged.
//     Untagged lines of the session's own (HIGHESTMODSEQ, QRESYNC's
//     VANISHED (EARLIER) and FETCH) and a tagged response code
//     (MODIFIED) go out with the command's tagged answer.
//   - It answers alone what the library cannot parse at all: ENABLE
//     CONDSTORE/QRESYNC, STATUS with HIGHESTMODSEQ, SEARCH with a
//     MODSEQ key (the MODSEQ of the result included).
//
// Every message's MODSEQ is kept by the store (it grows with each
// change, expunges included, per mailbox), so HIGHESTMODSEQ is on every
// SELECT and EXAMINE, and NOMODSEQ is never needed. The store keeps no
// record of expunged UIDs: VANISHED (EARLIER) reports every UID of the
// client's known range that no longer exists (RFC 7162 section 3.2.5.1
// allows it).

// cmdExt are the CONDSTORE and QRESYNC arguments of the running command,
// which the front took out before forwarding it.
type cmdExt struct {
	// qresync: SELECT/EXAMINE (QRESYNC (...)).
	qresync *qresyncParams
	// changedSince: FETCH (CHANGEDSINCE n).
	changedSince    uint64
	hasChangedSince bool
	// unchangedSince: STORE (UNCHANGEDSINCE n).
	unchangedSince    uint64
	hasUnchangedSince bool
	// listHighestModSeq: LIST ... RETURN (STATUS (... HIGHESTMODSEQ)).
	listHighestModSeq bool
	// binaryOffsets: FETCH's partial BINARY items (binarypartial.go).
	binaryOffsets map[string]uint64
	// fetchModSeq: FETCH asked for MODSEQ, itself or through
	// CHANGEDSINCE (RFC 7162 section 3.1.4.1), so each of its FETCH
	// responses carries it.
	fetchModSeq bool
	// poll: NOOP or CHECK, a client asking for news. Its updates
	// include what was committed through other nodes of the cluster
	// (protocols.Account.Refresh).
	poll bool
}

// qresyncParams are the client's known state of a mailbox (RFC 7162
// section 3.2.5).
type qresyncParams struct {
	uidValidity uint32
	modSeq      uint64
	// known are the UIDs the client knows; nil means 1 to UIDNEXT-1.
	known rangeSet
}

// relayNote is what the relay puts into one FETCH, EXPUNGE or STATUS
// response of the library's.
type relayNote struct {
	kind noteKind
	seq  uint32 // the response's sequence number (0 for STATUS)
	val  uint64 // the FETCH's MODSEQ, the expunged UID, the HIGHESTMODSEQ
}

// noteKind says which response a note is for.
type noteKind uint8

const (
	noteFetch   noteKind = iota // MODSEQ into a FETCH
	noteExpunge                 // an EXPUNGE written as VANISHED
	noteStatus                  // HIGHESTMODSEQ into a LIST-STATUS STATUS
)

// condState is the front's CONDSTORE and QRESYNC state of one
// connection; frontConn.mu guards it.
type condState struct {
	condstore, qresync bool
	ext                cmdExt
	notes              []relayNote
	// before are untagged lines written before the running command's
	// tagged answer, code a response code put into it (when OK).
	before []string
	code   string
	// enabled are capabilities added to the library's ENABLED line.
	enabled []string
}

// maxNotes bounds the notes queued for the relay; beyond it (a client
// that does not read while the library writes) the oldest are dropped.
const maxNotes = 1 << 16

func (f *frontConn) condstoreOn() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cs.condstore
}

func (f *frontConn) qresyncOn() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cs.qresync
}

// enableCondstore turns CONDSTORE on: from now on FETCH responses that
// tell of a change, and those of a FETCH asking for MODSEQ, carry
// MODSEQ (RFC 7162 section 3.1). Turned on with a mailbox
// selected, it tells the mailbox's HIGHESTMODSEQ, which the client had
// no reason to keep from SELECT (that of the view's last snapshot: never
// ahead of what the client was told). It runs while the library is
// idle.
func (f *frontConn) enableCondstore() {
	f.mu.Lock()
	was := f.cs.condstore
	f.cs.condstore = true
	sess := f.sess
	f.mu.Unlock()
	if was || sess == nil {
		return
	}
	var n uint64
	if sess.withView(func(v *view) error { n = v.highestModSeq; return nil }) == nil && n > 0 {
		_ = f.writeLine(fmt.Sprintf("* OK [HIGHESTMODSEQ %d] Highest", n))
	}
}

// commandExt returns the running command's extension arguments.
func (f *frontConn) commandExt() cmdExt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cs.ext
}

func (f *frontConn) setExt(e cmdExt) {
	f.mu.Lock()
	f.cs.ext = e
	f.mu.Unlock()
}

func (f *frontConn) note(n relayNote) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n.kind == noteExpunge && !f.cs.qresync || n.kind == noteFetch && !f.cs.condstore {
		return
	}
	if len(f.cs.notes) >= maxNotes {
		f.cs.notes = f.cs.notes[1:]
	}
	f.cs.notes = append(f.cs.notes, n)
}

// fetched notes the MODSEQ of a FETCH response the library is about to
// write (viewNotes).
func (f *frontConn) fetched(seq uint32, modSeq uint64) {
	f.note(relayNote{kind: noteFetch, seq: seq, val: modSeq})
}

// expunged notes the UID of an EXPUNGE response the library is about to
// write (viewNotes).
func (f *frontConn) expunged(seq uint32, uid schema.UID) {
	f.note(relayNote{kind: noteExpunge, seq: seq, val: uint64(uid)})
}

// statusWritten notes the HIGHESTMODSEQ of a LIST-STATUS STATUS response
// the library is about to write.
func (f *frontConn) statusWritten(modSeq uint64) {
	f.note(relayNote{kind: noteStatus, val: modSeq})
}

// untaggedBefore queues a line for the running command's tagged answer.
func (f *frontConn) untaggedBefore(line string) {
	f.mu.Lock()
	f.cs.before = append(f.cs.before, line)
	f.mu.Unlock()
}

// taggedCode sets the response code of the running command's tagged OK.
func (f *frontConn) taggedCode(code string) {
	f.mu.Lock()
	f.cs.code = code
	f.mu.Unlock()
}

// takeNote returns the value of the oldest note of a kind for seq,
// dropping it and the older ones of that kind (their lines went by
// without being seen whole, which only a broken connection does).
func (f *frontConn) takeNote(kind noteKind, seq uint32) (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, n := range f.cs.notes {
		if n.kind != kind || n.seq != seq {
			continue
		}
		kept := f.cs.notes[:0]
		for j, o := range f.cs.notes {
			if j > i || o.kind != kind {
				kept = append(kept, o)
			}
		}
		f.cs.notes = kept
		return n.val, true
	}
	return 0, false
}

// takeTagged returns and clears what goes with the running command's
// tagged answer; the command's notes are cleared too.
func (f *frontConn) takeTagged() (before []string, code string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	before, code = f.cs.before, f.cs.code
	f.cs.before, f.cs.code, f.cs.notes = nil, "", nil
	return before, code
}

// annotate rewrites the start of a library response: MODSEQ into a
// FETCH, VANISHED for an EXPUNGE, as the session noted them.
func (f *frontConn) annotate(frag []byte) []byte {
	if bytes.HasPrefix(frag, []byte("* STATUS ")) {
		return f.annotateStatus(frag)
	}
	if len(frag) < 4 || frag[0] != '*' || frag[1] != ' ' || frag[2] < '0' || frag[2] > '9' {
		return frag
	}
	i := 2
	for i < len(frag) && frag[i] >= '0' && frag[i] <= '9' {
		i++
	}
	n, err := strconv.ParseUint(string(frag[2:i]), 10, 32)
	if err != nil {
		return frag
	}
	seq := uint32(n)
	rest := frag[i:]
	switch {
	case bytes.HasPrefix(rest, []byte(" FETCH (")):
		ms, ok := f.takeNote(noteFetch, seq)
		if !ok {
			return frag
		}
		at := i + len(" FETCH (")
		ins := "MODSEQ (" + strconv.FormatUint(ms, 10) + ")"
		if at < len(frag) && frag[at] != ')' {
			ins += " "
		}
		out := make([]byte, 0, len(frag)+len(ins))
		out = append(out, frag[:at]...)
		out = append(out, ins...)
		return append(out, frag[at:]...)
	case bytes.Equal(bytes.TrimRight(rest, "\r\n"), []byte(" EXPUNGE")):
		uid, ok := f.takeNote(noteExpunge, seq)
		if !ok {
			return frag
		}
		return []byte("* VANISHED " + strconv.FormatUint(uid, 10) + "\r\n")
	}
	return frag
}

// annotateStatus puts HIGHESTMODSEQ into a STATUS response of
// LIST-STATUS: "* STATUS name (MESSAGES 3)" becomes "* STATUS name
// (MESSAGES 3 HIGHESTMODSEQ 9)". A response whose name is a literal
// (never for a name the library can quote) is not seen whole here and
// goes without.
func (f *frontConn) annotateStatus(frag []byte) []byte {
	ms, ok := f.takeNote(noteStatus, 0)
	if !ok {
		return frag
	}
	line := bytes.TrimRight(frag, "\r\n")
	if len(line) == len(frag) || len(line) < 2 || line[len(line)-1] != ')' || line[len(line)-2] == '}' {
		return frag
	}
	ins := "HIGHESTMODSEQ " + strconv.FormatUint(ms, 10)
	if line[len(line)-2] != '(' {
		ins = " " + ins
	}
	out := make([]byte, 0, len(frag)+len(ins))
	out = append(out, line[:len(line)-1]...)
	out = append(out, ins...)
	out = append(out, ')')
	return append(out, frag[len(line):]...)
}

// withTagged adds what the session queued to the running command's
// tagged answer line.
func (f *frontConn) withTagged(line []byte, status string) []byte {
	before, code := f.takeTagged()
	if status != "OK" {
		return line
	}
	if code != "" {
		// "tag OK text" becomes "tag OK [code] text".
		if i := bytes.Index(line, []byte(" OK ")); i >= 0 && !bytes.HasPrefix(line[i+4:], []byte("[")) {
			at := i + 4
			line = append(append(append([]byte(nil), line[:at]...), "["+code+"] "...), line[at:]...)
		}
	}
	if len(before) == 0 {
		return line
	}
	var b bytes.Buffer
	for _, l := range before {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	b.Write(line)
	return b.Bytes()
}

// withEnabled adds the front's capabilities to the library's ENABLED
// response.
func (f *frontConn) withEnabled(line []byte) []byte {
	f.mu.Lock()
	extra := f.cs.enabled
	f.cs.enabled = nil
	f.mu.Unlock()
	if len(extra) == 0 {
		return line
	}
	body := bytes.TrimRight(line, "\r\n")
	return []byte(string(body) + " " + strings.Join(extra, " ") + "\r\n")
}
