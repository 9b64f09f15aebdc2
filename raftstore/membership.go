package raftstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Server is a member of a shard's Raft group.
type Server struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
}

// Status is one replica's view of its group, for cluster status, metrics
// and placement.
type Status struct {
	Shard         uint32    `json:"shard"`
	State         string    `json:"state"` // leader, follower, candidate, shutdown
	LeaderID      string    `json:"leader_id,omitempty"`
	LeaderAddress string    `json:"leader_address,omitempty"`
	Term          uint64    `json:"term"`
	CommitIndex   uint64    `json:"commit_index"`
	AppliedIndex  uint64    `json:"applied_index"`
	LastIndex     uint64    `json:"last_index"`
	LastContact   time.Time `json:"last_contact,omitzero"`
	Servers       []Server  `json:"servers"`
	// Stopped says why the replica applies nothing until it is reopened
	// (see Shard.Broken), empty while it applies. Raft's applied index
	// goes on counting the entries it hands over meanwhile.
	Stopped string `json:"stopped,omitempty"`
	// Skipped counts the log entries the replica could not decode and
	// skipped (Reader.SkippedEntries): above zero, it may lack what they
	// wrote and differ from the others.
	Skipped uint64 `json:"skipped_entries,omitempty"`
	// Stuck says which write of the replica to its disk has hung and for
	// how long (Shard.Stuck), empty otherwise. A leader whose write hangs
	// names no leader (LeaderID) while it steps aside.
	Stuck string `json:"stuck,omitempty"`
	// DamagedReads counts the reads of damaged log entries since the
	// replica opened (read as missing; see ErrLogDamaged): above zero,
	// its disk handed back other bytes than were written.
	DamagedReads uint64 `json:"damaged_log_reads,omitempty"`
	// Repaired counts the pieces of messages, the mailbox and message
	// records and the parts of queued outbound messages in the replica's
	// state file that did not open and were put back from another
	// replica's copy (schema.RepairBlob, RepairRecord, RepairOutbound)
	// since it opened: above zero, its disk handed
	// back other bytes than were written.
	Repaired uint64 `json:"repaired_pieces,omitempty"`
}

// Leads reports whether the replica leads its group and acts as its
// leader: a leader whose write to its disk hangs (Stuck) does not.
func (st Status) Leads() bool { return st.State == "leader" && st.Stuck == "" }

// Status reports the replica's Raft state.
func (s *Shard) Status() Status {
	id, addr := s.Leader()
	st := Status{
		Shard:         s.cfg.Shard,
		State:         stateName(s.raft.State()),
		LeaderID:      id,
		LeaderAddress: addr,
		Term:          s.raft.CurrentTerm(),
		CommitIndex:   s.CommitIndex(),
		AppliedIndex:  s.raft.AppliedIndex(),
		LastIndex:     s.raft.LastIndex(),
	}
	if st.State != "leader" {
		st.LastContact = s.raft.LastContact()
	}
	st.Servers, _ = s.Servers()
	st.DamagedReads = s.logs.damagedReads.Load()
	st.Repaired = s.fsm.repaired.Load()
	if err := s.Stuck(); err != nil {
		st.Stuck = err.Error()
	}
	if err := s.Broken(); err != nil {
		st.Stopped = err.Error()
		return st
	}
	// read, not View: a status must not commit a pending group. While a
	// commit hangs, what it read last.
	if err := s.fsm.read(func(r *Reader) error { st.Skipped = r.SkippedEntries(); return nil }); err == nil {
		s.skipped.Store(st.Skipped)
	} else {
		st.Skipped = s.skipped.Load()
	}
	return st
}

func stateName(st raft.RaftState) string {
	switch st {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	default:
		return "shutdown"
	}
}

// Leader returns the id and address of the group's leader as this replica
// knows it ("" when it knows none, and while it leads but its write to
// its disk hangs: see IsLeader).
func (s *Shard) Leader() (id, address string) {
	addr, lid := s.raft.LeaderWithID()
	if string(lid) == s.cfg.NodeID && s.Stuck() != nil {
		return "", ""
	}
	return string(lid), string(addr)
}

// Servers returns the group's latest configuration.
func (s *Shard) Servers() ([]Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("shard %d: configuration: %w", s.cfg.Shard, err)
	}
	conf := f.Configuration()
	out := make([]Server, 0, len(conf.Servers))
	for _, srv := range conf.Servers {
		out = append(out, Server{ID: string(srv.ID), Address: string(srv.Address), Voter: srv.Suffrage == raft.Voter})
	}
	return out, nil
}

// AddVoter adds a voting member (or makes a member a voter, or updates
// its address). Only the leader can change the group. Like every
// membership change it returns when the change is committed or ctx ends
// (a change without a quorum would otherwise wait for ever).
func (s *Shard) AddVoter(ctx context.Context, id, address string) error {
	f := s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(address), 0, timeout(ctx))
	return s.membershipErr("add voter "+id, s.await(ctx, f))
}

// AddNonvoter adds a member that receives the log but does not vote.
func (s *Shard) AddNonvoter(ctx context.Context, id, address string) error {
	f := s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(address), 0, timeout(ctx))
	return s.membershipErr("add non-voter "+id, s.await(ctx, f))
}

// DemoteVoter turns a voter into a non-voter.
func (s *Shard) DemoteVoter(ctx context.Context, id string) error {
	f := s.raft.DemoteVoter(raft.ServerID(id), 0, timeout(ctx))
	return s.membershipErr("demote "+id, s.await(ctx, f))
}

// RemoveServer removes a member from the group.
func (s *Shard) RemoveServer(ctx context.Context, id string) error {
	f := s.raft.RemoveServer(raft.ServerID(id), 0, timeout(ctx))
	return s.membershipErr("remove "+id, s.await(ctx, f))
}

// await waits for a Raft future until ctx ends or the shard closes.
func (s *Shard) await(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closed:
		return ErrClosed
	}
}

// TransferLeadership hands leadership to the voter id (or, with id "",
// to the most up-to-date voter) and waits until it has taken over.
func (s *Shard) TransferLeadership(ctx context.Context, id, address string) error {
	// The voter that takes over is elected at once, while this replica
	// still believes it leads: it must not serve reads from here on.
	done := s.reads.transferring()
	var f raft.Future
	if id == "" {
		f = s.raft.LeadershipTransfer()
	} else {
		f = s.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(address))
	}
	// One goroutine waits for the future (a raft future must not be
	// waited on twice: the second waiter would read the closed channel's
	// zero value), ends the transfer's read fence, then answers.
	result := make(chan error, 1)
	go func() {
		err := f.Error()
		done()
		result <- err
	}()
	var err error
	select {
	case err = <-result:
	case <-ctx.Done():
		err = ctx.Err()
	case <-s.closed:
		err = ErrClosed
	}
	return s.membershipErr("transfer leadership", err)
}

// VerifyLeader confirms with a quorum that this replica still leads, so a
// read it serves next is not stale (a deposed leader cut off from the
// others fails here).
func (s *Shard) VerifyLeader(ctx context.Context) error {
	return s.membershipErr("verify leader", s.await(ctx, s.raft.VerifyLeader()))
}

func (s *Shard) membershipErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
		return fmt.Errorf("shard %d: %s: %w", s.cfg.Shard, what, ErrNotLeader)
	}
	if errors.Is(err, raft.ErrRaftShutdown) {
		return fmt.Errorf("shard %d: %s: %w", s.cfg.Shard, what, ErrClosed)
	}
	return fmt.Errorf("shard %d: %s: %w", s.cfg.Shard, what, err)
}

func timeout(ctx context.Context) time.Duration {
	return time.Until(deadline(ctx, 30*time.Second))
}

// StoredServers returns the latest group configuration that a closed
// replica's Raft state holds on disk, in its log or its newest snapshot,
// read without opening the replica. A node whose state file is too
// damaged to read its own records of the other nodes (the meta shard's)
// learns from it whom to copy that state from. Like opening the replica,
// it first finishes moving a log that raft.db still holds from before
// segment files into them.
func StoredServers(dir string) ([]Server, error) {
	if _, err := os.Stat(filepath.Join(dir, "raft.db")); err != nil {
		return nil, fmt.Errorf("stored configuration: %w", err)
	}
	snaps, err := newStateSnapshots(filepath.Join(dir, "snapshots"), nil)
	if err != nil {
		return nil, fmt.Errorf("stored configuration: %w", err)
	}
	metas, err := snaps.metas()
	if err != nil {
		return nil, fmt.Errorf("stored configuration: %w", err)
	}
	var conf raft.Configuration
	var at uint64
	if len(metas) > 0 {
		conf, at = metas[0].Configuration, metas[0].ConfigurationIndex
	}
	// A replica whose log is gone has only its snapshots' configuration;
	// its log is not created here, which would make it look whole.
	if raftStateIn(dir) {
		if logConf, ok, err := logConfiguration(dir, at); err != nil {
			return nil, err
		} else if ok {
			conf = logConf
		}
	}
	if len(conf.Servers) == 0 {
		return nil, errors.New("stored configuration: none in the log or snapshots")
	}
	out := make([]Server, 0, len(conf.Servers))
	for _, srv := range conf.Servers {
		out = append(out, Server{ID: string(srv.ID), Address: string(srv.Address), Voter: srv.Suffrage == raft.Voter})
	}
	return out, nil
}

// logConfiguration returns the newest configuration entry of the
// replica's log in dir that comes after index after, if there is one.
func logConfiguration(dir string, after uint64) (raft.Configuration, bool, error) {
	stable, err := openStableStore(dir)
	if err != nil {
		return raft.Configuration{}, false, fmt.Errorf("stored configuration: %w", err)
	}
	defer stable.Close()
	logs, err := openRaftLog(dir, stable, hclog.NewNullLogger())
	if err != nil {
		return raft.Configuration{}, false, fmt.Errorf("stored configuration: %w", err)
	}
	defer logs.Close()
	first, err := logs.FirstIndex()
	if err != nil {
		return raft.Configuration{}, false, fmt.Errorf("stored configuration: %w", err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return raft.Configuration{}, false, fmt.Errorf("stored configuration: %w", err)
	}
	// Configuration entries are rare: walk back from the newest entry to
	// the first one, or to the snapshot's configuration if that is newer.
	for i := last; i != 0 && i >= first && i > after; i-- {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			return raft.Configuration{}, false, fmt.Errorf("stored configuration: entry %d: %w", i, err)
		}
		if l.Type != raft.LogConfiguration {
			continue
		}
		conf, err := decodeConfiguration(l.Data)
		if err != nil {
			return raft.Configuration{}, false, fmt.Errorf("stored configuration: entry %d: %w", i, err)
		}
		return conf, true, nil
	}
	return raft.Configuration{}, false, nil
}

// decodeConfiguration is raft.DecodeConfiguration, which panics on bytes
// it cannot decode, with that panic returned as an error: the entry may
// be damaged.
func decodeConfiguration(b []byte) (conf raft.Configuration, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("undecodable configuration: %v", r)
		}
	}()
	return raft.DecodeConfiguration(b), nil
}
