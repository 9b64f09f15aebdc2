package imap

import (
	"bytes"
	"errors"
	"io"
	"math"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Fetch answers FETCH and UID FETCH. Non-PEEK body sections set \Seen
// first (not in a read-only mailbox), and the new flags are included in
// the responses. Message bytes are read from the store per message and
// dropped after it; only BODYSTRUCTUREs are cached.
//
// A message another session expunged, whose EXPUNGE this client has not
// been sent, gets no FETCH response (RFC 2180 section 4.1 discusses the
// choices): the command answers OK with what it can return, and the OK
// carries EXPUNGEISSUED (RFC 5530 section 3), so that the client can
// tell the short answer from a complete one.
func (s *session) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	v, err := s.selected()
	if err != nil {
		return err
	}
	v.drain()
	msgs, gone, err := v.selectNamed(numSet)
	if err != nil {
		return err
	}
	ext := s.cmdExt()
	if ext.hasChangedSince {
		// RFC 7162 section 3.1.4.1: only messages changed since.
		changedSince := func(sms []seqMsg) []seqMsg {
			changed := sms[:0]
			for _, sm := range sms {
				if sm.m.info.ModSeq > ext.changedSince {
					changed = append(changed, sm)
				}
			}
			return changed
		}
		msgs, gone = changedSince(msgs), changedSince(gone)
	}
	lost := len(gone) > 0
	markedSeen := map[*viewMsg]bool{}
	if !v.readOnly && setsSeen(options) {
		var unseen []seqMsg
		for _, sm := range msgs {
			if !sm.m.info.HasFlag(schema.FlagSeen) {
				unseen = append(unseen, sm)
			}
		}
		if len(unseen) > 0 {
			infos, _, err := s.storeFlags(v, unseen, schema.FlagsAdd, []string{schema.FlagSeen}, nil)
			if err != nil {
				return s.storeError("fetch set seen", err)
			}
			for _, info := range infos {
				if m := v.byUID[info.UID]; m != nil && info.ModSeq >= m.info.ModSeq {
					m.info = info
					markedSeen[m] = true
					v.learn(info.Flags)
				}
			}
		}
	}
	for _, sm := range msgs {
		if sm.m.expunged {
			lost = true
			continue
		}
		seen := markedSeen[sm.m]
		err := s.fetchOne(w, v, sm, options, seen, ext.fetchModSeq || seen)
		if errors.Is(err, errMessageGone) {
			lost = true
			continue
		}
		if err != nil {
			return err
		}
	}
	if lost {
		s.expungeIssued()
	}
	return nil
}

// errMessageGone is fetchOne's answer for a message expunged from the
// store since the view last heard: it wrote nothing for it.
var errMessageGone = errors.New("message expunged meanwhile")

// setsSeen reports whether a FETCH implicitly sets \Seen.
func setsSeen(options *imap.FetchOptions) bool {
	for _, bs := range options.BodySection {
		if !bs.Peek {
			return true
		}
	}
	for _, bs := range options.BinarySection {
		if !bs.Peek {
			return true
		}
	}
	return false
}

// fetchOne loads what one message's items need, then writes its FETCH
// response. Loading comes first so that a store failure never leaves a
// half-written response.
func (s *session) fetchOne(w *imapserver.FetchWriter, v *view, sm seqMsg, options *imap.FetchOptions, forceFlags, modSeq bool) error {
	m := sm.m
	info := m.info

	needHeader := options.Envelope
	needBody := false
	var bs imap.BodyStructure
	if options.BodyStructure != nil {
		if cached, ok := s.srv.bsCache.get(info.Blob); ok {
			bs = cached
		} else {
			needBody = true
		}
	}
	for _, sec := range options.BodySection {
		if !sectionPathOK(sec.Part) {
			continue
		}
		if len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierHeader {
			needHeader = true
		} else {
			needBody = true
		}
	}
	if len(options.BinarySection) > 0 || len(options.BinarySectionSize) > 0 {
		needBody = true
	}

	var raw []byte         // the whole message, or only its header section
	var hrec *searchRecord // the header's record, when read through the cache
	if needBody || needHeader {
		ctx, cancel := s.opContext()
		var err error
		if needBody {
			raw, err = s.acct.Body(ctx, info.Blob)
		} else if hrec, err = s.headerRecord(ctx, info.Blob); err == nil {
			raw = hrec.header
		}
		cancel()
		if errors.Is(err, schema.ErrNoSuchMessage) {
			// Expunged since the view last heard: answered without it
			// (see Fetch).
			return errMessageGone
		}
		if err != nil {
			return s.storeError("fetch", err)
		}
	}
	// BINARY sections are decoded before anything is written, so that
	// an unknown encoding answers NO without a partial response.
	binaries := make([][]byte, len(options.BinarySection))
	for i, sec := range options.BinarySection {
		b, err := binarySection(raw, sec.Part)
		if err != nil {
			return err
		}
		binaries[i] = partial(b, sec.Partial)
	}
	binarySizes := make([]uint32, len(options.BinarySectionSize))
	for i, sec := range options.BinarySectionSize {
		b, err := binarySection(raw, sec.Part)
		if err != nil {
			return err
		}
		binarySizes[i] = uint32(min(len(b), math.MaxUint32))
	}
	if options.BodyStructure != nil && bs == nil {
		bs = bodyStructureOf(raw)
		s.srv.bsCache.put(info.Blob, bs)
	}

	if modSeq {
		// Under CONDSTORE, MODSEQ goes into the responses of a FETCH
		// that asked for it and into those that tell of a change (here
		// the \Seen this FETCH set); RFC 7162 section 3.1 leaves it out
		// of the others, as Dovecot does, and clients that track a
		// message's MODSEQ (imaptest) take its appearance for a change.
		v.noteFetch(sm.seq, info.ModSeq)
	}
	rw := w.CreateMessage(sm.seq)
	// RFC 7162 section 3.1: under CONDSTORE, a FETCH that set \Seen
	// carries UID (and, through the relay, MODSEQ).
	if options.UID || forceFlags && s.condstore() {
		rw.WriteUID(imap.UID(info.UID))
	}
	if options.Flags || forceFlags {
		// A keyword the client has not seen in FLAGS yet is left out
		// here; the update after the command tells FLAGS, then the
		// message's full flags.
		shown := v.shown(info.Flags)
		rw.WriteFlags(v.fetchFlags(m, shown))
		m.told = shown
		m.dirty = !sameFlags(info.Flags, shown)
	}
	if options.InternalDate {
		rw.WriteInternalDate(info.InternalDate)
	}
	if options.RFC822Size {
		rw.WriteRFC822Size(int64(info.Size))
	}
	if options.Envelope {
		var env *imap.Envelope
		var routes []envelopeRoute
		if hrec != nil {
			env, routes = hrec.envelope()
		} else {
			env, routes = routedEnvelopeOf(raw)
		}
		if len(routes) > 0 && s.front != nil {
			env = s.front.routes.tokenise(env, routes)
		}
		rw.WriteEnvelope(env)
	}
	if options.BodyStructure != nil {
		rw.WriteBodyStructure(bs)
	}
	var werr error
	writeLiteral := func(wc io.WriteCloser, b []byte) {
		_, err := wc.Write(b)
		if cerr := wc.Close(); err == nil {
			err = cerr
		}
		if werr == nil {
			werr = err
		}
	}
	for _, sec := range options.BodySection {
		var b []byte
		switch {
		case !sectionPathOK(sec.Part):
		case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierNone:
			// BODY[] (and RFC822) is the message as stored (RFC 3501
			// section 6.4.5): no need to parse its header and copy it
			// whole, as the library's extraction does, which also gave
			// nothing for a message whose header did not parse.
			b = withoutNULs(partial(raw, sec.Partial))
		case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierText:
			// The message's text: what follows the blank line ending its
			// header, however the header reads.
			b = withoutNULs(partial(raw[schema.HeaderLength(raw):], sec.Partial))
		case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierHeader && len(sec.HeaderFields) == 0 && len(sec.HeaderFieldsNot) == 0:
			// The header section as stored, up to and with its blank
			// line (raw may be only that).
			b = withoutNULs(partial(raw[:schema.HeaderLength(raw)], sec.Partial))
		case hrec != nil && len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierHeader && sec.Partial == nil:
			if h, ok := hrec.headerSection(sec.HeaderFields, sec.HeaderFieldsNot); ok {
				b = withoutNULs(h)
				break
			}
			fallthrough
		default:
			b = withoutNULs(imapserver.ExtractBodySection(bytes.NewReader(withoutBrokenHeaderLines(raw)), sec))
		}
		writeLiteral(rw.WriteBodySection(sec, int64(len(b))), b)
	}
	for i, sec := range options.BinarySection {
		writeLiteral(rw.WriteBinarySection(sec, int64(len(binaries[i]))), binaries[i])
	}
	for i, sec := range options.BinarySectionSize {
		rw.WriteBinarySectionSize(sec, binarySizes[i])
	}
	// Close releases the connection's writer lock, so it runs whatever
	// happened before.
	if err := rw.Close(); werr == nil {
		werr = err
	}
	return werr
}

// withoutNULs returns b with every NUL octet replaced by 0x80. A literal
// holds no NUL (RFC 3501 and RFC 9051 section 9, CHAR8), and RFC 9051
// section 4.3.1 allows unencoded binary only in a literal8 answering
// BINARY[]: a BODY[] of a message stored with binary content would break
// that. The length stays, so partial fetches and RFC822.SIZE still agree
// (Dovecot substitutes the same octet). b is copied only when it has a NUL.
func withoutNULs(b []byte) []byte {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return b
	}
	out := bytes.Clone(b)
	for ; i < len(out); i++ {
		if out[i] == 0 {
			out[i] = 0x80
		}
	}
	return out
}
