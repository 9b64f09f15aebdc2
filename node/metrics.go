package node

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/transport"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/smtp"
	"github.com/mailcluster/mailcluster/raftstore"
)

// metrics is one node's Prometheus registry. It is not the global
// default registry, so several nodes can run in one test process.
type metrics struct {
	reg *prometheus.Registry
	// up is 1 while the node serves, 0 before start and after close.
	up prometheus.Gauge
	// rejected counts connections refused by the connection limits.
	rejected *prometheus.CounterVec
	// handshakeTimeouts counts TLS handshakes cut off by
	// limits.handshake_timeout; preLoginTimeouts connections closed by
	// limits.prelogin_idle_timeout or limits.login_timeout.
	handshakeTimeouts *prometheus.CounterVec
	preLoginTimeouts  *prometheus.CounterVec
	// commandsRefused counts commands refused by the command-rate limit;
	// deliveryRecords the delivery records written, dropped or failed.
	commandsRefused *prometheus.CounterVec
	deliveryRecords *prometheus.CounterVec
	// overQuota counts mail refused because a user's quota is full.
	overQuota *prometheus.CounterVec
	// forwardsWithheld counts forwarded recipients of mail judged junk,
	// which is not forwarded (smtp.Config.WithheldForwards).
	forwardsWithheld *prometheus.CounterVec
	// auth counts refused logins and lockouts for the auth guard.
	auth *authMetrics
	// filters counts content scans (filters.go).
	filters *filterMetrics
	// frontend counts connections, commands, deliveries and TLS of the
	// protocol frontends (frontend_metrics.go).
	frontend *frontendMetrics
	// scrubEnd is when the node's last scrub ended; scrubDamaged and
	// scrubUnreadable count, per replica, the messages it found damaged
	// and of which no replica's copy opens (scrub.go).
	scrubEnd        prometheus.Gauge
	scrubIncomplete prometheus.Gauge
	scrubDamaged    *prometheus.GaugeVec
	scrubUnreadable *prometheus.GaugeVec
}

func newMetrics(nodeID, version string) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mail_node_up",
			Help: "1 while the node serves clients, 0 while it starts or stops.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_node_connections_rejected_total",
			Help: "Client connections refused because a connection limit was reached, by listener and limit (max_connections or max_connections_per_ip).",
		}, []string{"listener", "reason"}),
		handshakeTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_node_handshake_timeouts_total",
			Help: "Client connections closed because their TLS handshake (implicit, STARTTLS or STLS) did not complete within limits.handshake_timeout, by listener.",
		}, []string{"listener"}),
		preLoginTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_node_prelogin_timeouts_total",
			Help: "Client connections closed before login, by listener and reason: idle (silent for limits.prelogin_idle_timeout) or login (not logged in within limits.login_timeout).",
		}, []string{"listener", "reason"}),
		commandsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_node_commands_refused_total",
			Help: "Client commands refused by the command-rate limit (limits.commands_per_second), by action: refused (temporary error) or closed (the connection ended).",
		}, []string{"action"}),
		deliveryRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_node_delivery_records_total",
			Help: "SMTP transactions handed to the users' delivery records, by result: written, failed (not written) or dropped (the queue was full).",
		}, []string{"result"}),
		overQuota: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_quota_refused_total",
			Help: "Mail refused because it would take a user over their storage quota, by operation: deliver (SMTP, a recipient at RCPT or at the end of DATA), append (IMAP APPEND) or copy (IMAP COPY).",
		}, []string{"operation"}),
		forwardsWithheld: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_forward_withheld_total",
			Help: "Recipients on the MX port whose alias forwards out of the cluster, not forwarded because the message was judged junk, by reason: spam (content filter) or dmarc-quarantine.",
		}, []string{"reason"}),
		auth:     newAuthMetrics(),
		filters:  newFilterMetrics(),
		frontend: newFrontendMetrics(),
		scrubEnd: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mail_scrub_last_end_timestamp_seconds",
			Help: "When the node's last scrub of its replicas ended (Unix time; 0 when none is recorded in the data directory); see scrub.every.",
		}),
		scrubIncomplete: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mail_scrub_incomplete",
			Help: "1 when the node's last scrub could not read every replica (one closed or being rebuilt; `mailnode scrub status` has the error); the next comes within 6 hours.",
		}),
		scrubDamaged: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mail_scrub_damaged_messages",
			Help: "Messages whose copy in the replica did not open under their user's key in the node's last scrub, mailboxes with a mailbox or message record that did not, and queued outbound messages with a part that did not, by shard: the disk handed back other bytes; each was put back from another replica's copy unless counted in mail_scrub_unreadable_messages.",
		}, []string{"shard"}),
		scrubUnreadable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mail_scrub_unreadable_messages",
			Help: "Messages, mailboxes with records and queued outbound messages of which no replica's copy opened in the node's last scrub, by shard: restore them from a backup.",
		}, []string{"shard"}),
	}
	for _, op := range []string{"deliver", "append", "copy"} {
		m.overQuota.WithLabelValues(op) // shown at 0 before the first refusal
	}
	for _, r := range []string{smtp.JunkSpam, smtp.JunkDMARCQuarantine} {
		m.forwardsWithheld.WithLabelValues(r)
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "mail_node_build_info",
		Help:        "Always 1; the labels name the node and the mailnode version.",
		ConstLabels: prometheus.Labels{"node": nodeID, "version": version},
	})
	info.Set(1)
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.up, m.rejected, m.handshakeTimeouts, m.preLoginTimeouts, info, m.commandsRefused, m.deliveryRecords, m.overQuota, m.forwardsWithheld,
		m.scrubEnd, m.scrubIncomplete, m.scrubDamaged, m.scrubUnreadable,
		m.auth.successes, m.auth.failures, m.auth.errors, m.auth.lockouts,
	)
	m.reg.MustRegister(m.filters.collectors()...)
	m.reg.MustRegister(m.frontend.collectors()...)
	return m
}

// authMetrics counts the logins through the auth guard by result, and
// its lockouts; it is the guard's protocols.AuthObserver.
type authMetrics struct {
	successes *prometheus.CounterVec
	failures  *prometheus.CounterVec
	errors    *prometheus.CounterVec
	lockouts  *prometheus.CounterVec
}

func newAuthMetrics() *authMetrics {
	a := &authMetrics{
		successes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_auth_successes_total",
			Help: "Accepted logins, by protocol.",
		}, []string{"protocol"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_auth_errors_total",
			Help: "Logins that could not be checked because the store failed, by protocol.",
		}, []string{"protocol"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_auth_failures_total",
			Help: "Refused logins, by protocol and reason: credentials (a wrong user name or password) or locked (a lockout applied; the password was not checked).",
		}, []string{"protocol", "reason"}),
		lockouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_auth_lockouts_total",
			Help: "Lockouts started after repeated failed logins, by protocol and scope: user (at addresses without a recent login of the user) or address.",
		}, []string{"protocol", "scope"}),
	}
	// Every series exists from the start, at 0.
	for _, p := range []string{"imap", "pop3", "smtp"} {
		a.successes.WithLabelValues(p)
		a.errors.WithLabelValues(p)
		a.failures.WithLabelValues(p, "credentials")
		a.failures.WithLabelValues(p, "locked")
		a.lockouts.WithLabelValues(p, string(protocols.LockUser))
		a.lockouts.WithLabelValues(p, string(protocols.LockAddress))
	}
	return a
}

// LoginSucceeded counts an accepted login.
func (a *authMetrics) LoginSucceeded(protocol string) {
	a.successes.WithLabelValues(protocol).Inc()
}

// LoginError counts a login the store could not check.
func (a *authMetrics) LoginError(protocol string) {
	a.errors.WithLabelValues(protocol).Inc()
}

// LoginFailed counts a refused login.
func (a *authMetrics) LoginFailed(protocol string, locked bool) {
	reason := "credentials"
	if locked {
		reason = "locked"
	}
	a.failures.WithLabelValues(protocol, reason).Inc()
}

// LockoutStarted counts a lockout.
func (a *authMetrics) LockoutStarted(protocol string, scope protocols.LockScope) {
	a.lockouts.WithLabelValues(protocol, string(scope)).Inc()
}

// clusterView is what the metrics read of the cluster at scrape time.
type clusterView interface {
	Shards() []*raftstore.Shard
	Status() cluster.Status
	Transport() *transport.Transport
	BlobReads() (replica, leader uint64)
}

// shardCollector reports each local shard replica's Raft state, the
// room left for the data directory, and the cluster's nodes and
// replication lag as this node sees them, at scrape time.
type shardCollector struct {
	c        clusterView
	dataDir  string
	stopped  *prometheus.Desc
	stuck    *prometheus.Desc
	free     *prometheus.Desc
	leader   *prometheus.Desc
	applied  *prometheus.Desc
	last     *prometheus.Desc
	commit   *prometheus.Desc
	nodeUp   *prometheus.Desc
	clock    *prometheus.Desc
	lag      *prometheus.Desc
	voters   *prometheus.Desc
	hasLeadr *prometheus.Desc
	opened   *prometheus.Desc
	reads    *prometheus.Desc
	skipped  *prometheus.Desc
	damaged  *prometheus.Desc
	repaired *prometheus.Desc
	// Latency histograms of each replica (raftstore.Shard.Times).
	logWrites    *prometheus.Desc
	stateCommits *prometheus.Desc
	applies      *prometheus.Desc
}

func newShardCollector(c clusterView, dataDir string) *shardCollector {
	labels := []string{"shard"}
	return &shardCollector{
		c:            c,
		dataDir:      dataDir,
		stopped:      prometheus.NewDesc("mail_raft_shard_stopped", "1 while the replica applies nothing because a write to its state file failed (a full disk, an I/O error; the node reopens it to replay its log) or the file is corrupt (the node rebuilds it from another replica).", labels, nil),
		free:         prometheus.NewDesc("mail_node_data_available_bytes", "Bytes still available to the node on the file system of its data directory.", nil, nil),
		leader:       prometheus.NewDesc("mail_raft_shard_leader", "1 when this node leads the shard's Raft group.", labels, nil),
		applied:      prometheus.NewDesc("mail_raft_shard_applied_index", "Last Raft log index applied to the shard's state.", labels, nil),
		last:         prometheus.NewDesc("mail_raft_shard_last_index", "Last Raft log index stored for the shard.", labels, nil),
		commit:       prometheus.NewDesc("mail_raft_shard_commit_index", "Commit index of the shard as this replica knows it.", labels, nil),
		nodeUp:       prometheus.NewDesc("mail_cluster_node_up", "1 when the node answered this node within the last seconds, by node and region.", []string{"node", "region", "health"}, nil),
		clock:        prometheus.NewDesc("mail_cluster_clock_offset_seconds", "How far another node's clock is ahead of this node's (negative: behind), read at its last answer to a ping, by node; to within half the ping's round trip.", []string{"node"}, nil),
		lag:          prometheus.NewDesc("mail_cluster_replica_lag_entries", "Committed entries a replica has not applied yet, by shard and node.", []string{"shard", "node"}, nil),
		voters:       prometheus.NewDesc("mail_cluster_shard_voters", "Voting replicas of a shard.", labels, nil),
		hasLeadr:     prometheus.NewDesc("mail_cluster_shard_has_leader", "1 when the shard has a known leader.", labels, nil),
		opened:       prometheus.NewDesc("mail_cluster_connections_opened_total", "Connections this node opened to other nodes, by kind (raft, rpc); each is a TLS handshake, and a rate that follows the load means connections are not reused.", []string{"kind"}, nil),
		stuck:        prometheus.NewDesc("mail_raft_shard_disk_stuck", "1 while a write of the replica to its disk (its Raft log, a commit of its state file) has not returned for longer than the stuck-write limit (a stalled volume, a failing device); a leader steps aside meanwhile and /readyz answers 503.", labels, nil),
		skipped:      prometheus.NewDesc("mail_raft_shard_skipped_entries", "Log entries the replica could not decode and skipped (written by newer software, see the command levels in docs/operations.md); above zero, the replica may lack what they wrote: remove the node and let it join again.", labels, nil),
		damaged:      prometheus.NewDesc("mail_raft_log_damaged_reads_total", "Reads of the replica's Raft log that found an entry damaged (its checksum does not match, or it no longer decodes) since the replica opened: the disk handed back other bytes than were written. The entry reads as missing; at the next start the node sets the log aside and the replica rejoins its group (docs/operations.md, When a Raft log is damaged).", labels, nil),
		repaired:     prometheus.NewDesc("mail_raft_repaired_pieces_total", "Pieces of messages (chunks, search records), mailbox and message records and parts of queued outbound messages in the replica's state file that did not open under their user's key and were put back from another replica's copy since the replica opened: the disk handed back other bytes than were written (docs/operations.md, When a stored message does not open).", labels, nil),
		logWrites:    prometheus.NewDesc("mail_raft_log_write_seconds", "Time of the replica's appends to its Raft log, each a batch of entries written and synced: the disk's sync latency as the write path sees it, on a leader before it replicates and on a follower before it answers.", labels, nil),
		stateCommits: prometheus.NewDesc("mail_raft_state_commit_seconds", "Time of the commits of the replica's state file (bbolt, two syncs each), grouped over many entries off the write path.", labels, nil),
		applies:      prometheus.NewDesc("mail_raft_apply_seconds", "Time from the proposal of a command by this replica as leader to its apply: the log write on a quorum, the round trip to the followers, the apply; a write's acknowledgement waits for it.", labels, nil),
		reads:        prometheus.NewDesc("mail_cluster_message_reads_total", "Reads of message contents (header, body, search record) by where they were served: this node's own replica, or the shard's leader (this node keeps no replica of the shard, or its replica lacked the message).", []string{"served_by"}, nil),
	}
}

// Describe sends the metric descriptions.
func (c *shardCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.leader, c.applied, c.last, c.commit, c.nodeUp, c.clock, c.lag, c.voters, c.hasLeadr, c.stopped, c.stuck, c.free, c.opened, c.reads, c.skipped, c.damaged,
		c.repaired, c.logWrites, c.stateCommits, c.applies} {
		ch <- d
	}
}

// Collect reads every shard's current state.
func (c *shardCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.c.Shards() {
		id := strconv.FormatUint(uint64(s.ID()), 10)
		st := s.Status()
		leader := 0.0
		if st.Leads() {
			leader = 1
		}
		ch <- prometheus.MustNewConstMetric(c.leader, prometheus.GaugeValue, leader, id)
		ch <- prometheus.MustNewConstMetric(c.applied, prometheus.GaugeValue, float64(st.AppliedIndex), id)
		ch <- prometheus.MustNewConstMetric(c.last, prometheus.GaugeValue, float64(st.LastIndex), id)
		ch <- prometheus.MustNewConstMetric(c.commit, prometheus.GaugeValue, float64(st.CommitIndex), id)
		stopped := 0.0
		if s.Broken() != nil {
			stopped = 1
		}
		ch <- prometheus.MustNewConstMetric(c.stopped, prometheus.GaugeValue, stopped, id)
		stuck := 0.0
		if st.Stuck != "" {
			stuck = 1
		}
		ch <- prometheus.MustNewConstMetric(c.stuck, prometheus.GaugeValue, stuck, id)
		ch <- prometheus.MustNewConstMetric(c.skipped, prometheus.GaugeValue, float64(st.Skipped), id)
		ch <- prometheus.MustNewConstMetric(c.damaged, prometheus.CounterValue, float64(st.DamagedReads), id)
		ch <- prometheus.MustNewConstMetric(c.repaired, prometheus.CounterValue, float64(st.Repaired), id)
		times := s.Times()
		ch <- timesHistogram(c.logWrites, times.LogWrites, id)
		ch <- timesHistogram(c.stateCommits, times.StateCommits, id)
		ch <- timesHistogram(c.applies, times.Applies, id)
	}
	if free, ok := availableBytes(c.dataDir); ok {
		ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, free)
	}
	if t := c.c.Transport(); t != nil {
		ch <- prometheus.MustNewConstMetric(c.opened, prometheus.CounterValue, float64(t.Opened(transport.KindRaft)), "raft")
		ch <- prometheus.MustNewConstMetric(c.opened, prometheus.CounterValue, float64(t.Opened(transport.KindRPC)), "rpc")
	}
	replica, leader := c.c.BlobReads()
	ch <- prometheus.MustNewConstMetric(c.reads, prometheus.CounterValue, float64(replica), "replica")
	ch <- prometheus.MustNewConstMetric(c.reads, prometheus.CounterValue, float64(leader), "leader")
	cs := c.c.Status()
	for _, n := range cs.Nodes {
		up := 0.0
		if n.Health == "up" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.nodeUp, prometheus.GaugeValue, up, n.ID, n.Region, n.Health)
		if n.ClockOffset != nil && n.ID != cs.Node {
			ch <- prometheus.MustNewConstMetric(c.clock, prometheus.GaugeValue, *n.ClockOffset, n.ID)
		}
	}
	for _, s := range cs.Shards {
		id := strconv.FormatUint(uint64(s.Shard), 10)
		voters, has := 0.0, 0.0
		if s.Leader != "" {
			has = 1
		}
		for _, r := range s.Replicas {
			if r.Voter {
				voters++
			}
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(r.Lag), id, r.Node)
		}
		ch <- prometheus.MustNewConstMetric(c.voters, prometheus.GaugeValue, voters, id)
		ch <- prometheus.MustNewConstMetric(c.hasLeadr, prometheus.GaugeValue, has, id)
	}
}

// timesHistogram turns a replica's latency histogram into a Prometheus
// histogram in seconds.
func timesHistogram(d *prometheus.Desc, wt raftstore.WriteTimes, shard string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(wt.Buckets))
	for i, n := range wt.Buckets {
		buckets[raftstore.WriteTimeBounds[i].Seconds()] = n
	}
	return prometheus.MustNewConstHistogram(d, wt.Count, wt.Sum.Seconds(), buckets, shard)
}

// quotaRefused counts a change the mail store refused for quota (the
// store's Config.OverQuota).
// scrubEnded shows a scrub's outcome in the metrics.
func (m *metrics) scrubEnded(st scrubState) {
	m.scrubEnd.Set(float64(st.Ended.Unix()))
	incomplete := 0.0
	if st.Incomplete {
		incomplete = 1
	}
	m.scrubIncomplete.Set(incomplete)
	m.scrubDamaged.Reset()
	m.scrubUnreadable.Reset()
	for n, out := range st.Shards {
		id := strconv.FormatUint(uint64(n), 10)
		m.scrubDamaged.WithLabelValues(id).Set(float64(out.Damaged))
		m.scrubUnreadable.WithLabelValues(id).Set(float64(out.Unreadable))
	}
}

func (n *Node) quotaRefused(op string) {
	n.metrics.overQuota.WithLabelValues(op).Inc()
}
