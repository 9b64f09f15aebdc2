package cluster_test

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// This file holds the sequential model of one mailbox that the fault
// tests check their recorded histories against with porcupine: append
// (returns the UID), snapshot read (UIDNEXT and every message with its
// flags), set flags on one message (returns its new flags, or nothing if
// it is gone) and expunge (returns the UIDs it removed). A call that
// failed may or may not have taken effect: it is recorded with no return
// time (porcupine may place it anywhere after its call, including after
// everything else, which stands for "never happened") and an output the
// model accepts whatever the state. Failed appends are settled before the
// check from where their Message-ID was found (resolveAppends).

// linKind is the kind of a recorded mailbox operation.
type linKind uint8

const (
	linAppend linKind = iota + 1
	linRead
	linFlags
	linExpunge
)

// linFlagNames are the flags the load uses, one bit each in a flag mask;
// linOtherFlag marks a flag the load never sets (it can only come from a
// corrupted record, and makes every comparison fail).
var linFlagNames = [...]string{schema.FlagSeen, schema.FlagFlagged, schema.FlagDeleted, schema.FlagAnswered}

const linOtherFlag = 0x80

func linMask(flags []string) uint8 {
	var m uint8
	for _, f := range flags {
		known := false
		for i, n := range linFlagNames {
			if strings.EqualFold(f, n) {
				m |= 1 << i
				known = true
			}
		}
		if !known {
			m |= linOtherFlag
		}
	}
	return m
}

func linFlagList(m uint8) []string {
	var out []string
	for i, n := range linFlagNames {
		if m&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

func linFlagString(m uint8) string {
	var b strings.Builder
	for i, n := range linFlagNames {
		if m&(1<<i) != 0 {
			b.WriteByte(n[1]) // S, F, D, A
		}
	}
	if m&linOtherFlag != 0 {
		b.WriteByte('?')
	}
	return b.String()
}

func linApplyFlags(cur uint8, op schema.FlagOp, m uint8) uint8 {
	switch op {
	case schema.FlagsSet:
		return m
	case schema.FlagsAdd:
		return cur | m
	default:
		return cur &^ m
	}
}

// linInput is an operation as called.
type linInput struct {
	Mailbox string // the partition: one mailbox per history
	Kind    linKind
	MsgID   string        // append: the Message-ID header of the message
	Flags   uint8         // append: its flags; flags: the flags of the update
	Op      schema.FlagOp // flags
	UIDs    []schema.UID  // flags: the one target; expunge: the targets, sorted
}

// linOutput is what a call returned.
type linOutput struct {
	Unknown bool       // the call failed: it may or may not have happened
	UID     schema.UID // append
	Next    schema.UID // read: UIDNEXT
	Msgs    string     // read: every message; flags: the messages returned (linEncode)
	Removed []schema.UID
	Index   uint64 // read: the applied index it was read at (shown, not checked)
}

// linState is the model's state: UIDNEXT and the messages, encoded as
// sorted five-byte records (UID, flag mask) so states compare with ==.
type linState struct {
	next schema.UID
	msgs string
}

type linMsg struct {
	uid   schema.UID
	flags uint8
}

func linEncode(msgs []linMsg) string {
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].uid < msgs[j].uid })
	b := make([]byte, 0, 5*len(msgs))
	for _, m := range msgs {
		b = binary.BigEndian.AppendUint32(b, uint32(m.uid))
		b = append(b, m.flags)
	}
	return string(b)
}

func linDecode(s string) []linMsg {
	out := make([]linMsg, 0, len(s)/5)
	for i := 0; i+5 <= len(s); i += 5 {
		out = append(out, linMsg{uid: schema.UID(binary.BigEndian.Uint32([]byte(s[i : i+4]))), flags: s[i+4]})
	}
	return out
}

func linDescribeMsgs(s string) string {
	var parts []string
	for _, m := range linDecode(s) {
		parts = append(parts, fmt.Sprintf("%d:%s", m.uid, linFlagString(m.flags)))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// linStep is the model's transition function; it never changes its
// arguments.
func linStep(state, input, output interface{}) (bool, interface{}) {
	st, in, out := state.(linState), input.(linInput), output.(linOutput)
	msgs := linDecode(st.msgs)
	switch in.Kind {
	case linAppend:
		if !out.Unknown && out.UID != st.next {
			return false, st
		}
		msgs = append(msgs, linMsg{uid: st.next, flags: in.Flags})
		return true, linState{next: st.next + 1, msgs: linEncode(msgs)}
	case linRead:
		return out.Next == st.next && out.Msgs == st.msgs, st
	case linFlags:
		uid := in.UIDs[0]
		i := slices.IndexFunc(msgs, func(m linMsg) bool { return m.uid == uid })
		if i < 0 {
			return out.Unknown || out.Msgs == "", st
		}
		msgs[i].flags = linApplyFlags(msgs[i].flags, in.Op, in.Flags)
		if !out.Unknown && out.Msgs != linEncode([]linMsg{msgs[i]}) {
			return false, st
		}
		return true, linState{next: st.next, msgs: linEncode(msgs)}
	case linExpunge:
		var kept []linMsg
		var removed []schema.UID
		for _, m := range msgs {
			if slices.Contains(in.UIDs, m.uid) {
				removed = append(removed, m.uid)
			} else {
				kept = append(kept, m)
			}
		}
		if !out.Unknown && !slices.Equal(removed, out.Removed) {
			return false, st
		}
		return true, linState{next: st.next, msgs: linEncode(kept)}
	}
	panic(fmt.Sprintf("unknown operation kind %d", in.Kind))
}

// linModel is the porcupine model of one mailbox, created empty (UIDNEXT
// 1) before the first operation of its history.
var linModel = porcupine.Model{
	Init: func() interface{} { return linState{next: 1} },
	Step: linStep,
	Hash: func(state interface{}) uint64 {
		st := state.(linState)
		h := fnv.New64a()
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(st.next))
		h.Write(b[:])
		h.Write([]byte(st.msgs))
		return h.Sum64()
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(linInput), output.(linOutput)
		var call, ret string
		switch in.Kind {
		case linAppend:
			call = fmt.Sprintf("append(%s, [%s])", in.MsgID, linFlagString(in.Flags))
			ret = fmt.Sprint(out.UID)
		case linRead:
			call = "read()"
			ret = fmt.Sprintf("next=%d %s at index %d", out.Next, linDescribeMsgs(out.Msgs), out.Index)
		case linFlags:
			call = fmt.Sprintf("flags(%d, %s, [%s])", in.UIDs[0], [...]string{"set", "add", "remove"}[in.Op], linFlagString(in.Flags))
			ret = linDescribeMsgs(out.Msgs)
		case linExpunge:
			call = fmt.Sprintf("expunge(%v)", in.UIDs)
			ret = fmt.Sprint(out.Removed)
		}
		if out.Unknown {
			ret = "?"
		}
		return call + " -> " + ret
	},
	DescribeState: func(state interface{}) string {
		st := state.(linState)
		return fmt.Sprintf("next=%d %s", st.next, linDescribeMsgs(st.msgs))
	},
}

// linHistory records the operations on the checked mailboxes, with
// call and return times from one monotonic clock, and the faults
// injected meanwhile (annotations of the visualization).
type linHistory struct {
	start time.Time

	mu      sync.Mutex
	ops     []porcupine.Operation
	clients []string // who each client id is
	faults  []porcupine.Annotation
}

func newLinHistory() *linHistory { return &linHistory{start: time.Now()} }

// now returns the history's clock.
func (h *linHistory) now() int64 { return int64(time.Since(h.start)) }

// newClient returns a fresh client id for who. A client whose call
// failed goes on under a new id, so every client's operations are
// sequential.
func (h *linHistory) newClient(who string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clients = append(h.clients, who)
	return len(h.clients) - 1
}

func (h *linHistory) who(client int) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if client < len(h.clients) {
		return h.clients[client]
	}
	return "?"
}

// add records one operation; a failed one (out.Unknown) never returns.
func (h *linHistory) add(client int, in linInput, call int64, out linOutput, ret int64) {
	if out.Unknown {
		ret = math.MaxInt64
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
}

// fault records a fault for the visualization.
func (h *linHistory) fault(what string, start, end int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = append(h.faults, porcupine.Annotation{Tag: "faults", Start: start, End: end, Description: what,
		BackgroundColor: "#f4cccc"})
}

// resolveAppends settles the appends that failed: where reports the UID
// a message was found at, if it ever existed. One that existed happened,
// at some time after its call, with that UID; one that never existed did
// not happen and leaves the history. Failed appends otherwise make the
// search exponential: any of them could be pending at any point.
func (h *linHistory) resolveAppends(where func(box, msgID string) (schema.UID, bool)) (resolved, dropped int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ops := h.ops[:0]
	for _, op := range h.ops {
		in, out := op.Input.(linInput), op.Output.(linOutput)
		if in.Kind == linAppend && out.Unknown {
			uid, ok := where(in.Mailbox, in.MsgID)
			if !ok {
				dropped++
				continue
			}
			op.Output = linOutput{UID: uid}
			resolved++
		}
		ops = append(ops, op)
	}
	h.ops = ops
	return resolved, dropped
}

// linResult sums up a check.
type linResult struct {
	Mailboxes, Ops, Unknown int
	Illegal                 []string // mailbox: visualization file
	TimedOut                []string
}

func (r linResult) String() string {
	switch {
	case len(r.Illegal) > 0:
		return fmt.Sprintf("NOT linearizable: %d of %d mailboxes (%d ops, %d unknown)", len(r.Illegal), r.Mailboxes, r.Ops, r.Unknown)
	case len(r.TimedOut) > 0:
		return fmt.Sprintf("linearizable as far as checked, %d of %d mailboxes timed out (%d ops, %d unknown)", len(r.TimedOut), r.Mailboxes, r.Ops, r.Unknown)
	}
	return fmt.Sprintf("linearizable (%d mailboxes, %d ops, %d with unknown outcome)", r.Mailboxes, r.Ops, r.Unknown)
}

// check runs porcupine on every mailbox's history, each with its own
// timeout, and writes a visualization of every history that is not
// linearizable to dir.
func (h *linHistory) check(t testing.TB, dir string, timeout time.Duration) linResult {
	h.mu.Lock()
	byBox := map[string][]porcupine.Operation{}
	var res linResult
	for _, op := range h.ops {
		in := op.Input.(linInput)
		byBox[in.Mailbox] = append(byBox[in.Mailbox], op)
		res.Ops++
		if op.Output.(linOutput).Unknown {
			res.Unknown++
		}
	}
	faults := slices.Clone(h.faults)
	h.mu.Unlock()
	boxes := make([]string, 0, len(byBox))
	for b := range byBox {
		boxes = append(boxes, b)
	}
	sort.Strings(boxes)
	res.Mailboxes = len(boxes)
	for _, box := range boxes {
		ops := byBox[box]
		result, info := porcupine.CheckOperationsVerbose(linModel, ops, timeout)
		switch result {
		case porcupine.Ok:
			continue
		case porcupine.Unknown:
			res.TimedOut = append(res.TimedOut, box)
			t.Logf("linearizability of %s (%d ops): not decided within %s", box, len(ops), timeout)
			continue
		}
		info.AddAnnotations(faults)
		path := filepath.Join(dir, "linearizability-"+box+".html")
		if err := porcupine.VisualizePath(linModel, info, path); err != nil {
			t.Logf("visualize %s: %v", box, err)
		}
		res.Illegal = append(res.Illegal, box+": "+path+" (go test -artifacts keeps it)")
		t.Logf("mailbox %s is NOT linearizable (%d ops); visualization: %s\n%s", box, len(ops), path, linExplain(info, ops, h.who))
	}
	return res
}

// linExplain describes where the longest linearization found stops: its
// last operations, the state they lead to, and the earliest operations
// left out, none of which can come next.
func linExplain(info porcupine.LinearizationInfo, ops []porcupine.Operation, who func(int) string) string {
	parts := info.PartialLinearizationsOperations()
	if len(parts) == 0 {
		return ""
	}
	var longest []porcupine.Operation
	for _, p := range parts[0] {
		if len(p) > len(longest) {
			longest = p
		}
	}
	var b strings.Builder
	st := linModel.Init()
	for _, op := range longest {
		_, st = linStep(st, op.Input, op.Output)
	}
	fmt.Fprintf(&b, "  longest linearization: %d operations; its last ones:\n", len(longest))
	for _, op := range longest[max(0, len(longest)-8):] {
		fmt.Fprintf(&b, "    client %d (%s) [%s, %s] %s\n", op.ClientId, who(op.ClientId), linTime(op.Call), linTime(op.Return), linModel.DescribeOperation(op.Input, op.Output))
	}
	fmt.Fprintf(&b, "  state then: %s\n  operations left out, earliest first:\n", linModel.DescribeState(st))
	in := map[int64]map[int]bool{} // call time -> client: the operations linearized
	for _, op := range longest {
		if in[op.Call] == nil {
			in[op.Call] = map[int]bool{}
		}
		in[op.Call][op.ClientId] = true
	}
	var left []porcupine.Operation
	for _, op := range ops {
		if !in[op.Call][op.ClientId] {
			left = append(left, op)
		}
	}
	sort.Slice(left, func(i, j int) bool { return left[i].Call < left[j].Call })
	for _, op := range left[:min(len(left), 5)] {
		fmt.Fprintf(&b, "    client %d (%s) [%s, %s] %s\n", op.ClientId, who(op.ClientId), linTime(op.Call), linTime(op.Return), linModel.DescribeOperation(op.Input, op.Output))
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func linTime(t int64) string {
	if t == math.MaxInt64 {
		return "never"
	}
	return time.Duration(t).Round(time.Millisecond).String()
}

// TestMailboxModel checks the model on small histories: it accepts what a
// mailbox may do and rejects a stale read, a UID handed out twice, UIDNEXT
// going back and a wrong expunge answer.
func TestMailboxModel(t *testing.T) {
	const never = math.MaxInt64
	box := "m"
	app := func(client int, call, ret int64, id string, uid schema.UID) porcupine.Operation {
		out := linOutput{UID: uid}
		if ret == never {
			out = linOutput{Unknown: true}
		}
		return porcupine.Operation{ClientId: client, Call: call, Return: ret,
			Input: linInput{Mailbox: box, Kind: linAppend, MsgID: id}, Output: out}
	}
	read := func(client int, call, ret int64, next schema.UID, msgs ...linMsg) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Call: call, Return: ret,
			Input: linInput{Mailbox: box, Kind: linRead}, Output: linOutput{Next: next, Msgs: linEncode(msgs)}}
	}
	flags := func(client int, call, ret int64, uid schema.UID, op schema.FlagOp, m uint8, result ...linMsg) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Call: call, Return: ret,
			Input: linInput{Mailbox: box, Kind: linFlags, UIDs: []schema.UID{uid}, Op: op, Flags: m}, Output: linOutput{Msgs: linEncode(result)}}
	}
	expunge := func(client int, call, ret int64, targets, removed []schema.UID) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Call: call, Return: ret,
			Input: linInput{Mailbox: box, Kind: linExpunge, UIDs: targets}, Output: linOutput{Removed: removed}}
	}
	const seen, deleted = 1, 4
	for _, tc := range []struct {
		name string
		ok   bool
		ops  []porcupine.Operation
	}{
		{"sequential", true, []porcupine.Operation{
			app(0, 0, 1, "a", 1), app(0, 2, 3, "b", 2), read(0, 4, 5, 3, linMsg{1, 0}, linMsg{2, 0}),
			flags(0, 6, 7, 1, schema.FlagsAdd, seen|deleted, linMsg{1, seen | deleted}),
			flags(0, 8, 9, 7, schema.FlagsAdd, seen), // no such message
			expunge(0, 10, 11, []schema.UID{1}, []schema.UID{1}), read(0, 12, 13, 3, linMsg{2, 0}),
		}},
		{"concurrent appends in either order", true, []porcupine.Operation{
			app(0, 0, 10, "a", 2), app(1, 1, 9, "b", 1), read(2, 11, 12, 3, linMsg{1, 0}, linMsg{2, 0}),
		}},
		{"stale read", false, []porcupine.Operation{
			app(0, 0, 10, "a", 1), read(1, 20, 30, 1),
		}},
		{"a UID handed out twice", false, []porcupine.Operation{
			app(0, 0, 10, "a", 1), app(1, 20, 30, "b", 1),
		}},
		{"failed append seen later", true, []porcupine.Operation{
			app(0, 0, never, "a", 0), read(1, 5, 6, 1), read(1, 10, 11, 2, linMsg{1, 0}),
		}},
		{"failed append never happened", true, []porcupine.Operation{
			app(0, 0, never, "a", 0), read(1, 10, 11, 1), app(1, 12, 13, "b", 1),
		}},
		{"UIDNEXT goes back", false, []porcupine.Operation{
			app(0, 0, never, "a", 0), read(1, 10, 11, 2, linMsg{1, 0}), read(1, 12, 13, 1),
		}},
		{"expunge misses a message", false, []porcupine.Operation{
			app(0, 0, 1, "a", 1), expunge(0, 2, 3, []schema.UID{1}, nil),
		}},
		{"flags lost", false, []porcupine.Operation{
			app(0, 0, 1, "a", 1), flags(0, 2, 3, 1, schema.FlagsAdd, seen, linMsg{1, seen}), read(1, 4, 5, 2, linMsg{1, 0}),
		}},
	} {
		if got := porcupine.CheckOperations(linModel, tc.ops); got != tc.ok {
			t.Errorf("%s: linearizable %v, want %v", tc.name, got, tc.ok)
		}
	}
}
