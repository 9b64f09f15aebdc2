package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// The load of the fault runs: deliverers, IMAP-like sessions on the
// checked mailboxes, and inbox observers, each recording every outcome
// and checking what a single client must see as it goes.

// noteUID records a UID a result held in a mailbox.
func (r *faultRun) noteUID(box string, uid schema.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if uid > r.maxUID[box] {
		r.maxUID[box] = uid
	}
}

// noteMessages records which message each UID of a read held: a UID
// that ever holds another message was handed out twice.
func (r *faultRun) noteMessages(box, who string, msgs []schema.MessageInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := r.observed[box]
	if seen == nil {
		seen = map[schema.UID]schema.ID{}
		r.observed[box] = seen
	}
	var dup []string
	for _, m := range msgs {
		if prev, ok := seen[m.UID]; ok && prev != m.ID {
			dup = append(dup, fmt.Sprintf("UID %d of %s held message %s and later %s (seen by %s)", m.UID, box, prev, m.ID, who))
		}
		seen[m.UID] = m.ID
		if m.UID > r.maxUID[box] {
			r.maxUID[box] = m.UID
		}
	}
	r.violations = append(r.violations, dup...)
}

// deliverer sends mail through one node: mostly to one user, sometimes
// to every user (one recipient per shard, so through the spool).
func (r *faultRun) deliverer(n *faultNode, rng *rand.Rand) {
	defer r.wg.Done()
	for seq := 1; !r.stopped.Load(); seq++ {
		if !n.Running() {
			pace(rng, 50*time.Millisecond, time.Millisecond)
			continue
		}
		store := n.Store()
		var rcpts []int
		switch p := rng.IntN(10); {
		case p < 7:
			rcpts = []int{rng.IntN(len(r.users))}
		case p < 9:
			for i := range r.users {
				rcpts = append(rcpts, i)
			}
		default:
			rcpts = rng.Perm(len(r.users))[:2]
		}
		d := &faultDelivery{msgID: fmt.Sprintf("<d-%s-%d@fault.test>", n.ID, seq), node: n.ID, rcpts: rcpts}
		var to []string
		for _, i := range rcpts {
			to = append(to, r.users[i].addr)
		}
		msg := fmt.Sprintf("Message-ID: %s\r\nFrom: sender@remote.test\r\nTo: %s\r\nSubject: fault load %d\r\n\r\nbody %d\r\n",
			d.msgID, strings.Join(to, ", "), seq, seq)
		ctx, cancel := context.WithTimeout(context.Background(), faultOpTimeout)
		d.call = r.hist.now()
		d.err = store.Deliver(ctx, schema.Delivery{From: "sender@remote.test", Recipients: to, Message: []byte(msg)})
		d.ret = r.hist.now()
		cancel()
		d.acked = d.err == nil
		if d.acked {
			r.acked.Add(1)
		}
		r.opDone("deliver", d.call, d.ret, d.err)
		r.mu.Lock()
		r.deliveries = append(r.deliveries, d)
		r.mu.Unlock()
		pace(rng, 20*time.Millisecond, 40*time.Millisecond)
	}
}

// observer reads every user's inbox through one node and checks what a
// single client must see: UIDNEXT never goes back, the inbox (from which
// nothing is expunged) never loses a message, and every UID is below
// UIDNEXT.
func (r *faultRun) observer(n *faultNode, rng *rand.Rand) {
	defer r.wg.Done()
	type view struct {
		acct  protocols.Account
		gen   int64
		inbox schema.ID
		next  schema.UID
		uids  []schema.UID
	}
	views := make([]view, len(r.users))
	defer func() {
		for _, v := range views {
			if v.acct != nil {
				v.acct.Close()
			}
		}
	}()
	who := n.ID + "/observer"
	for !r.stopped.Load() {
		for i, u := range r.users {
			if r.stopped.Load() {
				return
			}
			v := &views[i]
			if v.acct == nil || v.gen != n.gen.Load() || !n.Running() {
				if v.acct != nil {
					v.acct.Close()
					v.acct = nil
				}
				if !n.Running() {
					continue
				}
				gen := n.gen.Load()
				acct, err := r.login(n, u.addr)
				if err != nil {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), faultOpTimeout)
				info, err := acct.Mailbox(ctx, "INBOX")
				cancel()
				if err != nil {
					acct.Close()
					continue
				}
				v.acct, v.gen, v.inbox = acct, gen, info.ID
			}
			ctx, cancel := context.WithTimeout(context.Background(), faultOpTimeout)
			call := r.hist.now()
			snap, err := v.acct.Snapshot(ctx, v.inbox)
			cancel()
			r.opDone("observe", call, r.hist.now(), err)
			if err != nil {
				continue
			}
			box := u.addr + "/INBOX"
			next := snap.Mailbox.UIDNext
			uids := make([]schema.UID, len(snap.Messages))
			for j, m := range snap.Messages {
				uids[j] = m.UID
				if m.UID >= next {
					r.violation("%s: %s holds UID %d, UIDNEXT is %d", who, box, m.UID, next)
				}
				if j > 0 && m.UID <= uids[j-1] {
					r.violation("%s: %s lists UID %d after %d", who, box, m.UID, uids[j-1])
				}
			}
			if next < v.next {
				r.violation("%s: UIDNEXT of %s went back from %d to %d", who, box, v.next, next)
			}
			if lost := missing(v.uids, uids); len(lost) > 0 {
				r.violation("%s: UIDs %v of %s vanished (inbox read at index %d, login %d on this node)", who, lost, box, snap.Index, v.gen)
			}
			v.next, v.uids = next, uids
			r.noteMessages(box, who, snap.Messages)
			r.noteUID(box, next-1)
		}
		pace(rng, 100*time.Millisecond, 200*time.Millisecond)
	}
}

// missing returns the elements of the sorted old that the sorted cur lacks.
func missing(old, cur []schema.UID) []schema.UID {
	var out []schema.UID
	for _, u := range old {
		if _, ok := slices.BinarySearch(cur, u); !ok {
			out = append(out, u)
		}
	}
	return out
}

// session is an IMAP-like client of the first user's checked mailbox
// through one node: append, read, flags, expunge, with every call
// recorded for the linearizability check, and what a single client must
// see checked as it goes (UIDs only grow, it reads its own appends).
func (r *faultRun) session(n *faultNode, idx int, rng *rand.Rand) {
	defer r.wg.Done()
	who := fmt.Sprintf("%s/session%d", n.ID, idx)
	var acct protocols.Account
	gen := int64(-1)
	defer func() {
		if acct != nil {
			acct.Close()
		}
	}()
	client := r.hist.newClient(who)
	var cur *faultBox
	var known []linMsg                 // what this client believes the mailbox holds
	var blobs map[schema.UID]schema.ID // of the last read
	var lastNext, last schema.UID      // UIDNEXT read, highest UID appended
	for seq := 1; !r.stopped.Load(); seq++ {
		if box := r.box.Load(); box != cur {
			cur, known, blobs, lastNext, last = box, nil, nil, 0, 0
		}
		if acct == nil || gen != n.gen.Load() || !n.Running() {
			if acct != nil {
				acct.Close()
				acct = nil
			}
			if !n.Running() {
				pace(rng, 50*time.Millisecond, time.Millisecond)
				continue
			}
			gen = n.gen.Load()
			a, err := r.login(n, r.users[0].addr)
			if err != nil {
				continue
			}
			acct = a
		}
		kind := linRead
		switch p := rng.IntN(100); {
		case len(known) == 0:
			if p < 60 {
				kind = linAppend
			}
		case len(known) > 10:
			if p < 50 {
				kind = linExpunge
			} else if p < 75 {
				kind = linFlags
			}
		case p < 35:
			kind = linAppend
		case p < 60:
			kind = linRead
		case p < 85:
			kind = linFlags
		default:
			kind = linExpunge
		}
		in := linInput{Mailbox: cur.name, Kind: kind}
		var out linOutput
		ctx, cancel := context.WithTimeout(context.Background(), faultOpTimeout)
		if kind == linExpunge {
			in.UIDs = r.expungeTargets(ctx, acct, cur.name, known, blobs, rng)
			if len(in.UIDs) == 0 {
				in.Kind, kind = linRead, linRead
			}
		}
		call := r.hist.now()
		var err error
		switch kind {
		case linAppend:
			in.MsgID = fmt.Sprintf("<a-%s-%d-%d@fault.test>", n.ID, idx, seq)
			if rng.IntN(2) == 0 {
				in.Flags = uint8(rng.IntN(4)) // \Seen, \Flagged
			}
			msg := fmt.Sprintf("Message-ID: %s\r\nFrom: %s\r\nSubject: append %d\r\n\r\nbody\r\n", in.MsgID, r.users[0].addr, seq)
			var res schema.AppendResult
			if rng.IntN(2) == 0 {
				// As a session with the mailbox selected appends: the
				// commit also claims \Recent. Only appends claim here, so
				// the claim before is that of an earlier append.
				res, err = acct.AppendClaimingRecent(ctx, cur.id, []byte(msg), linFlagList(in.Flags), time.Time{})
				if err == nil && (!res.RecentClaimed || res.RecentBefore >= res.UID) {
					r.violation("%s: append to %s claimed %v, before %d, UID %d", who, cur.name, res.RecentClaimed, res.RecentBefore, res.UID)
				}
			} else {
				res, err = acct.Append(ctx, cur.id, []byte(msg), linFlagList(in.Flags), time.Time{})
			}
			out.UID = res.UID
		case linRead:
			var snap schema.MailboxSnapshot
			snap, err = acct.Snapshot(ctx, cur.id)
			if err == nil {
				out.Next, out.Index = snap.Mailbox.UIDNext, snap.Index
				msgs := make([]linMsg, len(snap.Messages))
				for i, m := range snap.Messages {
					msgs[i] = linMsg{uid: m.UID, flags: linMask(m.Flags)}
				}
				out.Msgs = linEncode(msgs)
				r.checkRead(who, cur.name, snap, lastNext, last)
				known, lastNext = msgs, out.Next
				blobs = map[schema.UID]schema.ID{}
				for _, m := range snap.Messages {
					blobs[m.UID] = m.Blob
				}
			}
		case linFlags:
			uid := known[rng.IntN(len(known))].uid
			if rng.IntN(10) == 0 {
				uid = max(lastNext, last+1) + schema.UID(rng.IntN(2)) // perhaps not there (yet)
			}
			in.UIDs = []schema.UID{uid}
			in.Op = schema.FlagOp(rng.IntN(3))
			in.Flags = uint8(1 + rng.IntN(7)) // \Seen, \Flagged, \Deleted
			var infos []schema.MessageInfo
			infos, err = acct.StoreFlags(ctx, cur.id, in.UIDs, in.Op, linFlagList(in.Flags))
			if err == nil {
				msgs := make([]linMsg, len(infos))
				for i, m := range infos {
					msgs[i] = linMsg{uid: m.UID, flags: linMask(m.Flags)}
				}
				out.Msgs = linEncode(msgs)
			}
		case linExpunge:
			targets := make([]schema.ExpungeTarget, len(in.UIDs))
			for i, u := range in.UIDs {
				targets[i] = schema.ExpungeTarget{UID: u}
			}
			out.Removed, err = acct.Expunge(ctx, cur.id, targets)
			slices.Sort(out.Removed)
		}
		ret := r.hist.now()
		cancel()
		r.opDone(map[linKind]string{linAppend: "append", linRead: "read", linFlags: "flags", linExpunge: "expunge"}[kind], call, ret, err)
		if err != nil {
			out = linOutput{Unknown: true}
		}
		if kind != linRead || err == nil { // a failed read has no effect to record
			r.hist.add(client, in, call, out, ret)
		}
		if err != nil && kind != linRead {
			client = r.hist.newClient(who) // the failed call never returns
		}
		if kind != linRead && err == nil {
			r.acked.Add(1)
		}
		switch kind {
		case linAppend:
			r.mu.Lock()
			r.appends = append(r.appends, &faultAppend{msgID: in.MsgID, box: cur.name, uid: out.UID, acked: err == nil, call: call, ret: ret})
			if err == nil {
				r.identifyLocked(cur.name, in.MsgID, out.UID, who+" (append)")
			}
			r.mu.Unlock()
			if err == nil {
				if out.UID < lastNext || out.UID <= last {
					r.violation("%s: append to %s returned UID %d after this client read UIDNEXT %d and appended UID %d", who, cur.name, out.UID, lastNext, last)
				}
				last = out.UID
				known = append(known, linMsg{uid: out.UID, flags: in.Flags})
				r.noteUID(cur.name, out.UID)
			}
		case linExpunge:
			r.mu.Lock()
			r.expunges = append(r.expunges, &faultExpunge{box: cur.name, targets: in.UIDs, removed: out.Removed, acked: err == nil})
			r.mu.Unlock()
			if err == nil {
				known = slices.DeleteFunc(known, func(m linMsg) bool { return slices.Contains(out.Removed, m.uid) })
			}
		case linFlags:
			for _, m := range linDecode(out.Msgs) {
				if i := slices.IndexFunc(known, func(k linMsg) bool { return k.uid == m.uid }); i >= 0 {
					known[i] = m
				}
				r.noteUID(cur.name, m.uid)
			}
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && n.Running() && gen == n.gen.Load() {
			pace(rng, 100*time.Millisecond, 100*time.Millisecond) // the node is cut off or electing
		}
		pace(rng, 5*time.Millisecond, 25*time.Millisecond)
	}
}

// checkRead checks one client's read of a checked mailbox against what
// the client saw before.
func (r *faultRun) checkRead(who, box string, snap schema.MailboxSnapshot, lastNext, last schema.UID) {
	next := snap.Mailbox.UIDNext
	if next < lastNext {
		r.violation("%s: UIDNEXT of %s went back from %d to %d", who, box, lastNext, next)
	}
	if next <= last {
		r.violation("%s: read UIDNEXT %d of %s after appending UID %d", who, next, box, last)
	}
	for i, m := range snap.Messages {
		if m.UID >= next {
			r.violation("%s: %s holds UID %d, UIDNEXT is %d", who, box, m.UID, next)
		}
		if i > 0 && m.UID <= snap.Messages[i-1].UID {
			r.violation("%s: %s lists UID %d after %d", who, box, m.UID, snap.Messages[i-1].UID)
		}
	}
	r.noteMessages(box, who, snap.Messages)
	r.noteUID(box, next-1)
}

// expungeTargets picks what a session expunges: the messages it saw
// flagged \Deleted, else one or two it knows of. It only expunges
// messages it has identified (its own appends, or a header read now), so
// every message that ever existed is identified or still there at the
// end: an append that failed and is neither did not happen.
func (r *faultRun) expungeTargets(ctx context.Context, acct protocols.Account, box string, known []linMsg,
	blobs map[schema.UID]schema.ID, rng *rand.Rand) []schema.UID {
	var cand []schema.UID
	for _, m := range known {
		if m.flags&(1<<2) != 0 { // \Deleted
			cand = append(cand, m.uid)
		}
	}
	if len(cand) == 0 {
		for _, i := range rng.Perm(len(known))[:min(len(known), 1+rng.IntN(2))] {
			cand = append(cand, known[i].uid)
		}
	}
	var out []schema.UID
	for _, uid := range cand {
		r.mu.Lock()
		_, ok := r.owner[box][uid]
		r.mu.Unlock()
		if !ok {
			blob, seen := blobs[uid]
			if !seen {
				continue
			}
			h, err := acct.Header(ctx, blob)
			if err != nil {
				continue // gone already, or the node is failing
			}
			r.mu.Lock()
			r.identifyLocked(box, messageID(h), uid, "header read")
			r.mu.Unlock()
		}
		out = append(out, uid)
	}
	slices.Sort(out)
	return out
}

// identifyLocked records that msgID was stored at uid in box; a UID that
// holds two messages, or a message at two UIDs, is a violation.
func (r *faultRun) identifyLocked(box, msgID string, uid schema.UID, how string) {
	if r.owner[box] == nil {
		r.owner[box], r.where[box] = map[schema.UID]string{}, map[string]schema.UID{}
	}
	if prev, ok := r.owner[box][uid]; ok && prev != msgID {
		r.violations = append(r.violations, fmt.Sprintf("%s: UID %d holds %s and %s (%s)", box, uid, prev, msgID, how))
	}
	if prev, ok := r.where[box][msgID]; ok && prev != uid {
		r.violations = append(r.violations, fmt.Sprintf("%s: %s is at UID %d and %d (%s)", box, msgID, prev, uid, how))
	}
	r.owner[box][uid], r.where[box][msgID] = msgID, uid
}
