package cluster_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// The checks after a fault run: every acknowledged message found once,
// UIDs and UIDNEXT, replicas alike, spools drained, the histories
// linearizable, and the summary.

// faultSummary is what a fault run found.
type faultSummary struct {
	rounds   int
	duration time.Duration
	faults   map[string]int
	ops      map[string]int
	failed   map[string]int
	slowest  time.Duration
	slowOp   string        // the slowest operation's kind and start
	recovery time.Duration // the longest wait for convergence

	// Deliveries count copies (one per recipient).
	sent, acked, found, duplicates, lost, unackedStored int
	// Appends to the checked mailboxes.
	appSent, appAcked, appFound, appExpunged, appDuplicates, appLost, appUnackedStored int
	inFlight                                                                           int // acknowledged writes a fault struck while in flight
	lin                                                                                linResult
	violations                                                                         []string
}

func (s *faultSummary) log(t *testing.T) {
	t.Logf("fault run: %d rounds in %s; faults %v; slowest acknowledged operation %s (%s); longest recovery %s",
		s.rounds, s.duration.Round(time.Second), s.faults, s.slowest.Round(time.Millisecond), s.slowOp, s.recovery.Round(time.Millisecond))
	t.Logf("operations %v, failed %v", s.ops, s.failed)
	t.Logf("deliveries (copies): sent %d, acknowledged %d, found %d, duplicates %d, lost %d; unacknowledged but stored %d",
		s.sent, s.acked, s.found, s.duplicates, s.lost, s.unackedStored)
	t.Logf("appends: sent %d, acknowledged %d, found %d, expunged by the load %d, duplicates %d, lost %d; unacknowledged but stored %d",
		s.appSent, s.appAcked, s.appFound, s.appExpunged, s.appDuplicates, s.appLost, s.appUnackedStored)
	t.Logf("acknowledged writes that were in flight when a fault struck: %d", s.inFlight)
	t.Logf("linearizability: %s", s.lin)
	t.Logf("other violations: %d", len(s.violations))
}

func (s *faultSummary) fail(t *testing.T) {
	t.Helper()
	for i, v := range s.violations {
		if i == 50 {
			t.Errorf("... and %d more violations", len(s.violations)-50)
			break
		}
		t.Errorf("violation: %s", v)
	}
	if s.lost+s.duplicates+s.appLost+s.appDuplicates > 0 {
		t.Errorf("acknowledged mail lost or duplicated: deliveries lost %d, duplicated %d; appends lost %d, duplicated %d",
			s.lost, s.duplicates, s.appLost, s.appDuplicates)
	}
	if s.acked == 0 || s.appAcked == 0 {
		t.Errorf("the load got nothing acknowledged (deliveries %d, appends %d)", s.acked, s.appAcked)
	}
	for _, v := range s.lin.Illegal {
		t.Errorf("history not linearizable: %s", v)
	}
}

// verify waits for the cluster to settle and checks everything the run
// recorded.
func (r *faultRun) verify() *faultSummary {
	r.t.Helper()
	r.waitConverged()
	if stuck := stuckPipelines(); len(stuck) > 0 {
		r.violation("raft replication stuck (a follower gets heartbeats but no entries; hashicorp/raft#612): %s", strings.Join(stuck, "; "))
	}
	s := &faultSummary{duration: time.Since(r.started)}
	r.mu.Lock()
	s.faults, s.ops, s.failed, s.slowest, s.slowOp = r.faults, r.ops, r.failed, r.slowest, r.slowestOp
	for _, d := range r.recoveries {
		s.recovery = max(s.recovery, d)
	}
	r.mu.Unlock()
	headers := map[schema.ID]string{} // blob -> Message-ID
	r.verifyDeliveries(s, headers)
	r.verifyBoxes(s, headers)
	r.verifyReplicas()
	r.countInFlight(s)
	r.mu.Lock()
	where := r.where
	r.mu.Unlock()
	resolved, dropped := r.hist.resolveAppends(func(box, msgID string) (schema.UID, bool) {
		uid, ok := where[box][msgID]
		return uid, ok
	})
	r.t.Logf("failed appends: %d happened (their UID is known), %d did not", resolved, dropped)
	s.lin = r.hist.check(r.t, r.t.ArtifactDir(), 2*time.Minute)
	r.mu.Lock()
	s.violations = r.violations
	r.mu.Unlock()
	return s
}

// readBox reads a mailbox and the Message-ID of every message in it.
func readBox(ctx context.Context, acct protocols.Account, mbox schema.ID, headers map[schema.ID]string) (schema.MailboxSnapshot, map[string][]schema.UID, error) {
	snap, err := acct.Snapshot(ctx, mbox)
	if err != nil {
		return snap, nil, err
	}
	byID := map[string][]schema.UID{}
	for _, m := range snap.Messages {
		id, ok := headers[m.Blob]
		if !ok {
			h, err := acct.Header(ctx, m.Blob)
			if err != nil {
				return snap, nil, fmt.Errorf("header of UID %d: %w", m.UID, err)
			}
			id = messageID(h)
			headers[m.Blob] = id
		}
		byID[id] = append(byID[id], m.UID)
	}
	return snap, byID, nil
}

func messageID(header []byte) string {
	for _, line := range bytes.Split(header, []byte("\r\n")) {
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(string(k), "Message-ID") {
			return strings.TrimSpace(string(v))
		}
	}
	return ""
}

// verifyDeliveries reads every inbox until every acknowledged copy is
// there (multi-shard deliveries finish through the spool) or a minute
// passes, then counts.
func (r *faultRun) verifyDeliveries(s *faultSummary, headers map[schema.ID]string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	accts := make([]protocols.Account, len(r.users))
	inboxes := make([]schema.ID, len(r.users))
	for i, u := range r.users {
		accts[i] = r.anyLogin(u.addr)
		defer accts[i].Close()
		info, err := accts[i].Mailbox(ctx, "INBOX")
		if err != nil {
			r.t.Fatal(err)
		}
		inboxes[i] = info.ID
	}
	r.mu.Lock()
	deliveries := slices.Clone(r.deliveries)
	r.mu.Unlock()
	var found []map[string][]schema.UID
	var snaps []schema.MailboxSnapshot
	deadline := time.Now().Add(time.Minute)
	for {
		found, snaps = nil, nil
		for i := range r.users {
			snap, byID, err := readBox(ctx, accts[i], inboxes[i], headers)
			if err != nil {
				r.t.Fatalf("read the inbox of %s: %v", r.users[i].addr, err)
			}
			found, snaps = append(found, byID), append(snaps, snap)
		}
		pending := 0
		for _, d := range deliveries {
			stored := 0
			for _, i := range d.rcpts {
				if len(found[i][d.msgID]) > 0 {
					stored++
				}
			}
			partial := stored > 0 && stored < len(d.rcpts)
			if d.acked && stored < len(d.rcpts) || len(d.rcpts) > 1 && partial {
				pending++
			}
		}
		if pending == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // polling with a deadline: the spool retries every second
	}
	sent := map[string]bool{}
	for _, d := range deliveries {
		sent[d.msgID] = true
		s.sent += len(d.rcpts)
		stored := 0
		for _, i := range d.rcpts {
			uids := found[i][d.msgID]
			if len(uids) > 0 {
				stored++
			}
			if len(uids) > 1 {
				s.duplicates += len(uids) - 1
				r.violation("delivery %s (through %s, acknowledged %v) is in the inbox of %s %d times: UIDs %v",
					d.msgID, d.node, d.acked, r.users[i].addr, len(uids), uids)
			}
			switch {
			case d.acked && len(uids) == 0:
				s.acked++
				s.lost++
				r.violation("acknowledged delivery %s (through %s, %s to %s) is missing from the inbox of %s",
					d.msgID, d.node, linTime(d.call), linTime(d.ret), r.users[i].addr)
			case d.acked:
				s.acked++
				s.found++
			case len(uids) > 0:
				s.unackedStored++
			}
		}
		// Recipients on several shards go through the spool: all or none.
		if len(d.rcpts) > 1 && stored > 0 && stored < len(d.rcpts) && !d.acked {
			r.violation("unacknowledged delivery %s (through %s: %v) reached %d of its %d recipients", d.msgID, d.node, d.err, stored, len(d.rcpts))
		}
	}
	for i, u := range r.users {
		box := u.addr + "/INBOX"
		for id, uids := range found[i] {
			if !sent[id] {
				r.violation("%s holds a message nobody sent: %q at UIDs %v", box, id, uids)
			}
		}
		r.checkFinal(box, snaps[i])
	}
}

// checkFinal checks a mailbox's final state against every UID seen.
func (r *faultRun) checkFinal(box string, snap schema.MailboxSnapshot) {
	r.mu.Lock()
	maxUID := r.maxUID[box]
	seen := r.observed[box]
	r.mu.Unlock()
	if snap.Mailbox.UIDNext <= maxUID {
		r.violation("%s: final UIDNEXT %d is not above UID %d seen during the run", box, snap.Mailbox.UIDNext, maxUID)
	}
	if int(snap.Mailbox.Messages) != len(snap.Messages) {
		r.violation("%s: counts %d messages, lists %d", box, snap.Mailbox.Messages, len(snap.Messages))
	}
	r.noteMessages(box, "final read", snap.Messages)
	if !strings.HasSuffix(box, "/INBOX") {
		return
	}
	// Nothing is expunged from an inbox: every message ever seen is there.
	final := map[schema.UID]bool{}
	for _, m := range snap.Messages {
		final[m.UID] = true
	}
	var gone []schema.UID
	for uid := range seen {
		if !final[uid] {
			gone = append(gone, uid)
		}
	}
	if len(gone) > 0 {
		slices.Sort(gone)
		r.violation("%s: UIDs %v were read during the run and are gone", box, gone)
	}
}

// verifyBoxes reads every checked mailbox, adds that final read to its
// history, and accounts for every append.
func (r *faultRun) verifyBoxes(s *faultSummary, headers map[schema.ID]string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	acct := r.anyLogin(r.users[0].addr)
	defer acct.Close()
	r.mu.Lock()
	appends, expunges := slices.Clone(r.appends), slices.Clone(r.expunges)
	r.mu.Unlock()
	byBox := map[string][]*faultAppend{}
	for _, a := range appends {
		byBox[a.box] = append(byBox[a.box], a)
	}
	client := r.hist.newClient("final read")
	for i := 1; i <= r.boxes; i++ {
		name := fmt.Sprintf("lin-%03d", i)
		info, err := acct.Mailbox(ctx, name)
		if err != nil {
			r.t.Fatalf("mailbox %s: %v", name, err)
		}
		call := r.hist.now()
		snap, found, err := readBox(ctx, acct, info.ID, headers)
		if err != nil {
			r.t.Fatalf("read %s: %v", name, err)
		}
		msgs := make([]linMsg, len(snap.Messages))
		for j, m := range snap.Messages {
			msgs[j] = linMsg{uid: m.UID, flags: linMask(m.Flags)}
		}
		r.hist.add(client, linInput{Mailbox: name, Kind: linRead}, call, linOutput{Next: snap.Mailbox.UIDNext, Msgs: linEncode(msgs), Index: snap.Index}, r.hist.now())
		r.checkFinal(name, snap)
		r.mu.Lock()
		for id, uids := range found {
			for _, u := range uids {
				r.identifyLocked(name, id, u, "final read")
			}
		}
		r.mu.Unlock()

		// Which UIDs the load removed, or may have.
		removed, mayRemove := map[schema.UID]bool{}, map[schema.UID]bool{}
		for _, e := range expunges {
			if e.box != name {
				continue
			}
			for _, u := range e.removed {
				removed[u] = true
			}
			if !e.acked {
				for _, u := range e.targets {
					mayRemove[u] = true
				}
			}
		}
		sent := map[string]bool{}
		uidOf := map[schema.UID]string{}
		for _, a := range byBox[name] {
			sent[a.msgID] = true
			s.appSent++
			uids := found[a.msgID]
			if len(uids) > 1 {
				s.appDuplicates += len(uids) - 1
				r.violation("append %s (acknowledged %v) is in %s %d times: UIDs %v", a.msgID, a.acked, name, len(uids), uids)
			}
			if !a.acked {
				if len(uids) > 0 {
					s.appUnackedStored++
				}
				continue
			}
			s.appAcked++
			if prev, ok := uidOf[a.uid]; ok {
				r.violation("%s: UID %d was returned to two appends, %s and %s", name, a.uid, prev, a.msgID)
			}
			uidOf[a.uid] = a.msgID
			switch {
			case len(uids) == 0 && (removed[a.uid] || mayRemove[a.uid]):
				s.appExpunged++
			case len(uids) == 0:
				s.appLost++
				r.violation("acknowledged append %s (UID %d in %s, %s to %s) is gone, and no expunge named its UID",
					a.msgID, a.uid, name, linTime(a.call), linTime(a.ret))
			default:
				s.appFound++
				if uids[0] != a.uid {
					r.violation("acknowledged append %s returned UID %d but sits at UID %d in %s", a.msgID, a.uid, uids[0], name)
				}
				if removed[uids[0]] {
					r.violation("%s: UID %d (%s) was reported expunged and is still there", name, uids[0], a.msgID)
				}
			}
		}
		for id, uids := range found {
			if !sent[id] {
				r.violation("%s holds a message nobody sent: %q at UIDs %v", name, id, uids)
			}
		}
	}
}

// verifyReplicas waits until every replica of every mail shard holds the
// same mail (mailbox records, message records with their sealed
// attributes, blobs) and every spool is empty.
func (r *faultRun) verifyReplicas() {
	r.t.Helper()
	var last error
	deadline := time.Now().Add(time.Minute)
	for {
		if last = r.replicasAgree(); last == nil {
			return
		}
		if time.Now().After(deadline) {
			r.violation("replicas differ a minute after the load stopped: %v", last)
			return
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline
	}
}

func (r *faultRun) replicasAgree() error {
	digests := map[uint32]map[string]string{} // shard -> node -> digest
	for _, n := range r.c.Running() {
		for _, s := range n.Cluster().Shards() {
			if s.ID() == 0 {
				continue
			}
			d, err := replicaDigest(s, r.users)
			if err != nil {
				return fmt.Errorf("%s shard %d: %w", n.ID, s.ID(), err)
			}
			if digests[s.ID()] == nil {
				digests[s.ID()] = map[string]string{}
			}
			digests[s.ID()][n.ID] = d
		}
	}
	for shard, byNode := range digests {
		if len(byNode) < min(3, len(r.c.Running())) {
			return fmt.Errorf("shard %d has replicas on %d nodes", shard, len(byNode))
		}
		var first string
		for node, d := range byNode {
			if strings.HasPrefix(d, "spool holds") {
				return fmt.Errorf("shard %d on %s: %s", shard, node, d)
			}
			if first == "" {
				first = d
			} else if d != first {
				return fmt.Errorf("shard %d: replicas differ: %v", shard, byNode)
			}
		}
	}
	return nil
}

// replicaDigest sums up the mail a replica holds for the users.
func replicaDigest(s *raftstore.Shard, users []faultUser) (string, error) {
	h := sha256.New()
	summary := ""
	err := s.View(func(rd *raftstore.Reader) error {
		spooled, err := rd.Spooled()
		if err != nil {
			return err
		}
		if len(spooled) > 0 {
			summary = fmt.Sprintf("spool holds %d messages", len(spooled))
			return nil
		}
		msgs := 0
		for _, u := range users {
			if !rd.HasUser(u.id) {
				continue
			}
			boxes, err := rd.Mailboxes(u.id)
			if err != nil {
				return err
			}
			sort.Slice(boxes, func(i, j int) bool { return bytes.Compare(boxes[i].ID[:], boxes[j].ID[:]) < 0 })
			for _, b := range boxes {
				fmt.Fprintf(h, "box %x %d %d %d %d %d\n", b.ID, b.UIDValidity, b.UIDNext, b.Messages, b.Size, b.HighestModSeq)
				recs, err := rd.Messages(u.id, b.ID)
				if err != nil {
					return err
				}
				for _, m := range recs {
					sealed := sha256.Sum256(m.Sealed)
					fmt.Fprintf(h, "msg %d %x %x %d %d %x\n", m.UID, m.ID, m.Blob, m.Size, m.ModSeq, sealed[:8])
					blob, err := rd.Blob(u.id, m.Blob)
					if err != nil {
						return fmt.Errorf("UID %d: %w", m.UID, err)
					}
					fmt.Fprintf(h, "blob %d %d %d\n", blob.Refs, blob.Size, blob.Chunks)
				}
				msgs += len(recs)
			}
		}
		summary = fmt.Sprintf("%d messages, digest %s", msgs, hex.EncodeToString(h.Sum(nil))[:16])
		return nil
	})
	return summary, err
}

// countInFlight counts the acknowledged appends and deliveries that were
// in flight when a fault began: those went through the router's retries.
func (r *faultRun) countInFlight(s *faultSummary) {
	r.mu.Lock()
	defer r.mu.Unlock()
	struck := func(call, ret int64) bool {
		for _, f := range r.faultStarts {
			if call < f && f < ret {
				return true
			}
		}
		return false
	}
	for _, a := range r.appends {
		if a.acked && struck(a.call, a.ret) {
			s.inFlight++
		}
	}
	for _, d := range r.deliveries {
		if d.acked && struck(d.call, d.ret) {
			s.inFlight++
		}
	}
}
