package imap

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-message/mail"

	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
)

// THREAD (RFC 5256 section 3), run by the front like SORT (sort.go):
// the search keys select the messages, and ORDEREDSUBJECT or REFERENCES
// arranges them into threads. The work is bounded: a message's
// References keep at most maxThreadRefs IDs of at most maxMsgIDLen
// bytes, the loop check walks at most maxThreadDepth parents (a link
// whose check would walk further is not made), and every walk of the
// finished trees is iterative, so a hostile mailbox costs time linear
// in its size and no stack.

const (
	// maxThreadRefs is how many Message-IDs of a References header are
	// kept: the last ones, nearest the message.
	maxThreadRefs = 32
	// maxMsgIDLen bounds one Message-ID (a header line's length).
	maxMsgIDLen = 998
	// maxThreadDepth bounds the parent walk of the loop check.
	maxThreadDepth = 256
)

// threadCommand is a parsed THREAD or UID THREAD.
type threadCommand struct {
	uid          bool
	algorithm    string // ORDEREDSUBJECT or REFERENCES
	criteria     *imap.SearchCriteria
	charsetKnown bool
}

// parseThread reads THREAD's arguments: algorithm charset search-keys.
func parseThread(cmd *imapwire.Command) (*threadCommand, error) {
	tc := &threadCommand{uid: cmd.Name == "UID THREAD"}
	toks := cmd.Args
	if len(toks) < 1 || toks[0].Kind != imapwire.KindAtom {
		return nil, errSearchSyntax("Threading algorithm expected")
	}
	tc.algorithm = strings.ToUpper(string(toks[0].Value))
	switch tc.algorithm {
	case "ORDEREDSUBJECT", "REFERENCES":
	default:
		return nil, errSearchSyntax("Unknown threading algorithm")
	}
	if len(toks) < 2 || !toks[1].IsString() || toks[1].Depth != 0 {
		return nil, errSearchSyntax("Charset expected")
	}
	switch strings.ToUpper(string(toks[1].Value)) {
	case "UTF-8", "US-ASCII":
		tc.charsetKnown = true
	}
	var err error
	if tc.criteria, err = parseSearchKeys(toks[2:]); err != nil {
		return nil, err
	}
	return tc, nil
}

// threadMsg is one matching message with what threading reads of it.
type threadMsg struct {
	num     uint32    // sequence number or UID, as answered
	seq     uint32    // for ties
	date    time.Time // sent date, else internal date
	subject string    // base subject, i;ascii-casemap key
	reply   bool      // the subject had a reply or forward marker
	msgID   string
	refs    []string // References, else In-Reply-To's first ID
}

// threadNode is a message (msg set) or a dummy in a thread tree.
type threadNode struct {
	msg      *threadMsg
	parent   *threadNode
	children []*threadNode
}

// parseMsgIDs returns the msg-ids ("<...>") of a header value, without
// their angle brackets and white space, the last max of them. IDs
// longer than maxMsgIDLen or empty are skipped.
func parseMsgIDs(s string, max int) []string {
	var ids []string
	for {
		open := strings.IndexByte(s, '<')
		if open < 0 {
			break
		}
		s = s[open+1:]
		end := strings.IndexAny(s, "<>")
		if end < 0 {
			break
		}
		if s[end] == '<' {
			// An unclosed "<": restart at the next one.
			s = s[end:]
			continue
		}
		id := strings.Join(strings.Fields(s[:end]), "")
		s = s[end+1:]
		if id == "" || len(id) > maxMsgIDLen {
			continue
		}
		ids = append(ids, id)
		if len(ids) > 2*max {
			ids = append(ids[:0], ids[len(ids)-max:]...)
		}
	}
	if len(ids) > max {
		ids = ids[len(ids)-max:]
	}
	return ids
}

// readThreadMsg fills a threadMsg from a message's header.
func readThreadMsg(tm *threadMsg, h *mail.Header, internal time.Time) {
	env := envelopeOfHeader(h.Header.Header)
	tm.date = env.Date.UTC()
	if env.Date.IsZero() {
		tm.date = internal.UTC()
	}
	norm := strings.Join(strings.Fields(env.Subject), " ")
	base := baseSubject(norm)
	tm.subject = asciiCasemap(base)
	tm.reply = base != stripSubjBlobs(norm)
	if ids := parseMsgIDs(h.Get("Message-Id"), 1); len(ids) == 1 {
		tm.msgID = ids[0]
	}
	tm.refs = parseMsgIDs(h.Get("References"), maxThreadRefs)
	if len(tm.refs) == 0 {
		if ids := parseMsgIDs(h.Get("In-Reply-To"), maxThreadRefs); len(ids) > 0 {
			tm.refs = ids[:1]
		}
	}
}

// stripSubjBlobs removes leading blobs and white space only, so that a
// subject whose base differs from it had a reply or forward marker.
func stripSubjBlobs(s string) string {
	for {
		s = strings.TrimLeft(s, " ")
		r, ok := cutSubjBlob(s)
		if !ok || r == "" {
			return s
		}
		s = r
	}
}

// threadLess orders messages by sent date, then sequence number.
func threadLess(a, b *threadMsg) bool {
	if c := a.date.Compare(b.date); c != 0 {
		return c < 0
	}
	return a.seq < b.seq
}

// firstMsg is the message a node sorts by: its own, or a dummy's first
// child's (dummies have only message children).
func (n *threadNode) firstMsg() *threadMsg {
	for n.msg == nil && len(n.children) > 0 {
		n = n.children[0]
	}
	return n.msg
}

// sortNodes sorts siblings by their first message.
func sortNodes(nodes []*threadNode) {
	sort.SliceStable(nodes, func(i, j int) bool {
		a, b := nodes[i].firstMsg(), nodes[j].firstMsg()
		if a == nil || b == nil {
			return a != nil
		}
		return threadLess(a, b)
	})
}

// orderedSubject threads by base subject: each subject's messages by
// date, the first the parent of the others, threads by their first
// message's date.
func orderedSubject(msgs []*threadMsg) []*threadNode {
	sorted := append([]*threadMsg(nil), msgs...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].subject != sorted[j].subject {
			return sorted[i].subject < sorted[j].subject
		}
		return threadLess(sorted[i], sorted[j])
	})
	var roots []*threadNode
	var cur *threadNode
	for i, m := range sorted {
		if i == 0 || m.subject != sorted[i-1].subject {
			cur = &threadNode{msg: m}
			roots = append(roots, cur)
			continue
		}
		cur.children = append(cur.children, &threadNode{msg: m, parent: cur})
	}
	sortNodes(roots)
	return roots
}

// wouldLoop reports whether making child a child of parent would make a
// loop, or the check would walk more than maxThreadDepth parents.
func wouldLoop(parent, child *threadNode) bool {
	n := parent
	for d := 0; n != nil; d++ {
		if n == child || d > maxThreadDepth {
			return true
		}
		n = n.parent
	}
	return false
}

// references is RFC 5256's REFERENCES algorithm (section 3, after
// JWZ): messages linked by Message-ID, References and In-Reply-To,
// dummies pruned, roots grouped by base subject, siblings sorted by
// date.
func references(msgs []*threadMsg) []*threadNode {
	// (1) The ID table and the parent links. Only parent pointers are
	// set here; children lists are built once the links are final.
	table := make(map[string]*threadNode, len(msgs))
	var all []*threadNode
	container := func(id string) *threadNode {
		n := table[id]
		if n == nil {
			n = &threadNode{}
			table[id] = n
			all = append(all, n)
		}
		return n
	}
	for _, m := range msgs {
		var self *threadNode
		if m.msgID != "" {
			if n := table[m.msgID]; n == nil || n.msg == nil {
				self = container(m.msgID)
				self.msg = m
			}
		}
		if self == nil {
			// No Message-ID, or a duplicate: a container of its own.
			self = &threadNode{msg: m}
			all = append(all, self)
		}
		// (1.B) Link the references in order, never relinking.
		var prev *threadNode
		for _, id := range m.refs {
			n := container(id)
			if prev != nil && n.parent == nil && !wouldLoop(prev, n) {
				n.parent = prev
			}
			prev = n
		}
		// (1.C) The last reference is the message's parent. A parent
		// an earlier message's References gave it is dropped first,
		// even when the new link is not made because it would loop
		// (RFC 5256 section 3, step 1.B).
		self.parent = nil
		if prev != nil && !wouldLoop(prev, self) {
			self.parent = prev
		}
	}
	for _, n := range all {
		if n.parent != nil {
			n.parent.children = append(n.parent.children, n)
		}
	}
	// (2) The roots.
	var roots []*threadNode
	for _, n := range all {
		if n.parent == nil {
			roots = append(roots, n)
		}
	}
	// (4) Prune dummies, iteratively: a dummy without children goes, one
	// with children gives them to its parent, except a root dummy with
	// more than one child.
	roots = pruneLevel(roots, true)
	stack := append([]*threadNode(nil), roots...)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n.children = pruneLevel(n.children, false)
		for _, c := range n.children {
			c.parent = n
		}
		stack = append(stack, n.children...)
	}
	// (5) The roots by date, a dummy's children first, so that its
	// first child stands for it; grouping visits them in this order.
	for _, r := range roots {
		if r.msg == nil {
			sortNodes(r.children)
		}
	}
	sortNodes(roots)
	// (6) Group roots by base subject.
	roots = groupBySubject(roots)
	// (7) Every set of siblings by date, the roots last (a dummy sorts
	// by its first child).
	stack = append(stack[:0], roots...)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		sortNodes(n.children)
		stack = append(stack, n.children...)
	}
	sortNodes(roots)
	return roots
}

// pruneLevel prunes the dummies of one level of siblings. A promoted
// child that is itself a dummy is pruned in turn; the loop ends because
// each dummy is removed once.
func pruneLevel(nodes []*threadNode, root bool) []*threadNode {
	out := nodes[:0:0]
	queue := append([]*threadNode(nil), nodes...)
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		switch {
		case n.msg != nil:
			out = append(out, n)
		case len(n.children) == 0:
		case root && len(n.children) > 1:
			// Kept; its children are pruned as the next level.
			out = append(out, n)
		default:
			for _, c := range n.children {
				c.parent = nil
			}
			queue = append(queue, n.children...)
		}
	}
	return out
}

// groupBySubject is step 6: roots with the same base subject become one
// thread.
func groupBySubject(roots []*threadNode) []*threadNode {
	subject := func(n *threadNode) (string, bool) {
		m := n.firstMsg()
		if m == nil {
			return "", false
		}
		return m.subject, m.reply && n.msg != nil
	}
	table := map[string]*threadNode{}
	for _, r := range roots {
		s, reply := subject(r)
		if s == "" {
			continue
		}
		old, ok := table[s]
		switch {
		case !ok:
			table[s] = r
		case old.msg != nil && r.msg == nil:
			table[s] = r
		case old.msg != nil && r.msg != nil && old.msg.reply && !reply:
			table[s] = r
		}
	}
	var out []*threadNode
	moved := map[*threadNode]bool{}
	adopt := func(parent, child *threadNode) {
		child.parent = parent
		parent.children = append(parent.children, child)
		moved[child] = true
	}
	for _, r := range roots {
		if moved[r] {
			continue // an earlier root's subject twin took it already
		}
		s, _ := subject(r)
		old := table[s]
		if s == "" || old == r {
			out = append(out, r)
			continue
		}
		switch {
		case old.msg == nil && r.msg == nil:
			for _, c := range r.children {
				c.parent = old
			}
			old.children = append(old.children, r.children...)
			moved[r] = true
		case old.msg == nil:
			adopt(old, r)
		case r.msg != nil && r.msg.reply && !old.msg.reply:
			adopt(old, r)
		default:
			// Both replies or neither (the table prefers a non-reply, so
			// old is no reply when r is none): siblings under a new
			// dummy, which takes old's place in out and in the table.
			d := &threadNode{}
			placed := false
			for i, o := range out {
				if o == old {
					out[i], placed = d, true
				}
			}
			if !placed {
				out = append(out, d)
			}
			adopt(d, old)
			adopt(d, r)
			table[s] = d
		}
	}
	kept := out[:0]
	for _, r := range out {
		if !moved[r] {
			kept = append(kept, r)
		}
	}
	return kept
}

// writeThreads writes the trees as RFC 5256's thread-list: "(1 2)(3
// (4)(5))", iteratively.
func writeThreads(b *strings.Builder, roots []*threadNode) {
	type item struct {
		n    *threadNode
		text string
	}
	var stack []item
	push := func(it ...item) {
		for i := len(it) - 1; i >= 0; i-- {
			stack = append(stack, it[i])
		}
	}
	for _, r := range roots {
		push(item{text: "("}, item{n: r}, item{text: ")"})
		for len(stack) > 0 {
			it := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if it.n == nil {
				b.WriteString(it.text)
				continue
			}
			n := it.n
			var next []item
			if n.msg != nil {
				b.WriteString(strconv.FormatUint(uint64(n.msg.num), 10))
				if len(n.children) == 1 {
					next = append(next, item{text: " "}, item{n: n.children[0]})
				} else if len(n.children) > 1 {
					next = append(next, item{text: " "})
				}
			}
			if n.msg == nil && len(n.children) == 1 {
				next = append(next, item{n: n.children[0]})
			} else if len(n.children) > 1 {
				for _, c := range n.children {
					next = append(next, item{text: "("}, item{n: c}, item{text: ")"})
				}
			}
			push(next...)
		}
	}
}

// threadResponse is the untagged THREAD answer.
func threadResponse(roots []*threadNode) string {
	var b strings.Builder
	b.WriteString("* THREAD ")
	writeThreads(&b, roots)
	return strings.TrimRight(b.String(), " ")
}

// runThread matches and threads on the session's view; lost as
// matchEach says.
func (s *session) runThread(v *view, tc *threadCommand) ([]*threadNode, bool, error) {
	var msgs []*threadMsg
	lost, err := s.matchEach(v, tc.criteria, func(sm *searchMsg) error {
		tm := &threadMsg{seq: sm.seq, num: sm.seq}
		if tc.uid {
			tm.num = uint32(sm.m.info.UID)
		}
		if rec := sm.headerRecord(); rec != nil {
			rec.threadFields(tm, sm.m.info.InternalDate)
		} else if h := sm.loadHeader(); h != nil {
			readThreadMsg(tm, h, sm.m.info.InternalDate)
		} else {
			return nil // sm.err says why
		}
		msgs = append(msgs, tm)
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if tc.algorithm == "ORDEREDSUBJECT" {
		return orderedSubject(msgs), lost, nil
	}
	return references(msgs), lost, nil
}

// thread answers THREAD and UID THREAD.
func (f *frontConn) thread(cmd *imapwire.Command) bool {
	answer := f.answerer(cmd)
	tc, err := parseThread(cmd)
	if err != nil {
		return answer("BAD [CLIENTBUG] " + err.Error())
	}
	sess, ok := f.searchSession(tc.charsetKnown, answer)
	if sess == nil {
		return ok
	}
	var roots []*threadNode
	var lost bool
	err = sess.withView(func(v *view) (err error) {
		roots, lost, err = sess.runThread(v, tc)
		return err
	})
	if err != nil {
		return answer(failedStatus(err))
	}
	if err := f.writeLine(threadResponse(roots)); err != nil {
		return false
	}
	return answer(okStatus("Thread completed", lost))
}
