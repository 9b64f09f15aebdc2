package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
