package node

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

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
			Help: "Client connections refused because a connection limit was reached, by listener.",
		}, []string{"listener"}),
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
		m.up, m.rejected, info,
	)
	return m
}

// shardCollector reports each local shard replica's Raft state at scrape
// time.
type shardCollector struct {
	shards  func() []*raftstore.Shard
	leader  *prometheus.Desc
	applied *prometheus.Desc
	last    *prometheus.Desc
}

func newShardCollector(shards func() []*raftstore.Shard) *shardCollector {
	labels := []string{"shard"}
	return &shardCollector{
		shards:  shards,
		leader:  prometheus.NewDesc("mail_raft_shard_leader", "1 when this node leads the shard's Raft group.", labels, nil),
		applied: prometheus.NewDesc("mail_raft_shard_applied_index", "Last Raft log index applied to the shard's state.", labels, nil),
		last:    prometheus.NewDesc("mail_raft_shard_last_index", "Last Raft log index stored for the shard.", labels, nil),
	}
}

// Describe sends the metric descriptions.
func (c *shardCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.leader
	ch <- c.applied
	ch <- c.last
}

// Collect reads every shard's current state.
func (c *shardCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.shards() {
		if s == nil {
			continue
		}
		id := strconv.FormatUint(uint64(s.ID()), 10)
		leader := 0.0
		if s.IsLeader() {
			leader = 1
		}
		r := s.Raft()
		ch <- prometheus.MustNewConstMetric(c.leader, prometheus.GaugeValue, leader, id)
		ch <- prometheus.MustNewConstMetric(c.applied, prometheus.GaugeValue, float64(r.AppliedIndex()), id)
		ch <- prometheus.MustNewConstMetric(c.last, prometheus.GaugeValue, float64(r.LastIndex()), id)
	}
}
