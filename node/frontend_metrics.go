package node

import (
	"crypto/tls"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/protocols"
)

// commandBuckets are the bounds of the command latency histograms, from
// a cached FETCH (well under a millisecond) to a large DATA or an IDLE.
var commandBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60}

// frontendMetrics counts what the protocol frontends do: it hands out
// the observers of package protocols, one per listener, per protocol and
// per SMTP mode, each with its label children resolved in advance so
// that the hot paths only add to counters.
type frontendMetrics struct {
	connections *prometheus.CounterVec
	open        *prometheus.GaugeVec
	received    *prometheus.CounterVec
	sent        *prometheus.CounterVec
	tls         *prometheus.CounterVec
	cmds        *prometheus.CounterVec
	durations   *prometheus.HistogramVec
	delivered   *prometheus.CounterVec
}

func newFrontendMetrics() *frontendMetrics {
	byListener := []string{"protocol", "listener"}
	return &frontendMetrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_frontend_connections_total",
			Help: "Client connections accepted (those the connection limits refused are in mail_node_connections_rejected_total), by protocol and listener.",
		}, byListener),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mail_frontend_connections_open",
			Help: "Client connections open now, by protocol and listener.",
		}, byListener),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_frontend_received_bytes_total",
			Help: "Bytes received from clients as they crossed the wire (TLS records included), by protocol and listener.",
		}, byListener),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_frontend_sent_bytes_total",
			Help: "Bytes sent to clients as they crossed the wire (TLS records included), by protocol and listener.",
		}, byListener),
		tls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_frontend_tls_connections_total",
			Help: "TLS handshakes completed (implicit TLS, STARTTLS or STLS), by protocol, listener, TLS version and cipher suite (crypto/tls names; other for any it does not name).",
		}, []string{"protocol", "listener", "version", "cipher"}),
		cmds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_frontend_commands_total",
			Help: "Commands answered, by protocol, command (other for unknown ones) and result (ok, or error for a refusal or failure).",
		}, []string{"protocol", "command", "result"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mail_frontend_command_duration_seconds",
			Help:    "Time taken to answer a command, by protocol and command.",
			Buckets: commandBuckets,
		}, []string{"protocol", "command"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_smtp_deliveries_total",
			Help: "SMTP message transactions by how they ended, at the end of DATA or BDAT: by mode (mx or submission), result (accepted, temporary for a 4xx refusal, permanent for 5xx) and reason (the RFC 3463 class of the reply: address, mailbox, system, network, protocol, content, policy, other; none when accepted).",
		}, []string{"mode", "result", "reason"}),
	}
}

// collectors returns what to register.
func (f *frontendMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{f.connections, f.open, f.received, f.sent, f.tls, f.cmds, f.durations, f.delivered}
}

// listener returns the observer of one listener's connections; its
// series exist from then on, at 0.
func (f *frontendMetrics) listener(protocol, name string) *listenerMetrics {
	return &listenerMetrics{
		opened:   f.connections.WithLabelValues(protocol, name),
		open:     f.open.WithLabelValues(protocol, name),
		received: f.received.WithLabelValues(protocol, name),
		sent:     f.sent.WithLabelValues(protocol, name),
		tls:      f.tls,
		protocol: protocol,
		name:     name,
		seen:     map[uint32]prometheus.Counter{},
	}
}

// listenerMetrics is the protocols.ConnObserver of one listener.
type listenerMetrics struct {
	opened, received, sent prometheus.Counter
	open                   prometheus.Gauge
	tls                    *prometheus.CounterVec
	protocol, name         string

	// seen holds the TLS counter of each version and cipher suite met,
	// so that a handshake looks its labels up once.
	mu   sync.Mutex
	seen map[uint32]prometheus.Counter
}

var _ protocols.ConnObserver = (*listenerMetrics)(nil)

// ConnOpened counts an accepted connection.
func (l *listenerMetrics) ConnOpened() {
	l.opened.Inc()
	l.open.Inc()
}

// ConnClosed counts a closed connection.
func (l *listenerMetrics) ConnClosed() { l.open.Dec() }

// BytesRead counts bytes received.
func (l *listenerMetrics) BytesRead(n int) { l.received.Add(float64(n)) }

// BytesWritten counts bytes sent.
func (l *listenerMetrics) BytesWritten(n int) { l.sent.Add(float64(n)) }

// TLSEstablished counts a handshake by version and cipher suite.
func (l *listenerMetrics) TLSEstablished(version, cipher uint16) {
	key := uint32(version)<<16 | uint32(cipher)
	l.mu.Lock()
	c, ok := l.seen[key]
	if !ok {
		c = l.tls.WithLabelValues(l.protocol, l.name, tlsVersionLabel(version), tlsCipherLabel(cipher))
		l.seen[key] = c
	}
	l.mu.Unlock()
	c.Inc()
}

// tlsVersionLabel names a TLS version as crypto/tls does ("TLS 1.3"),
// and any other as "other".
func tlsVersionLabel(v uint16) string {
	switch v {
	case tls.VersionTLS10, tls.VersionTLS11, tls.VersionTLS12, tls.VersionTLS13:
		return tls.VersionName(v)
	}
	return "other"
}

// tlsCipherLabel names a cipher suite as crypto/tls does
// ("TLS_AES_128_GCM_SHA256"); crypto/tls names only the suites it
// implements, and an unnamed one is "other".
func tlsCipherLabel(id uint16) string {
	name := tls.CipherSuiteName(id)
	if strings.HasPrefix(name, "0x") {
		return "other"
	}
	return name
}

// commandSeries are the series of one command.
type commandSeries struct {
	ok, failed prometheus.Counter
	duration   prometheus.Observer
}

// commandMetrics is the protocols.CommandObserver of one protocol.
type commandMetrics struct {
	byName map[string]commandSeries
	other  commandSeries
}

var _ protocols.CommandObserver = (*commandMetrics)(nil)

// commands returns the observer of protocol's commands, names being the
// frontend's list; every series exists from then on, at 0.
func (f *frontendMetrics) commands(protocol string, names []string) *commandMetrics {
	series := func(name string) commandSeries {
		return commandSeries{
			ok:       f.cmds.WithLabelValues(protocol, name, "ok"),
			failed:   f.cmds.WithLabelValues(protocol, name, "error"),
			duration: f.durations.WithLabelValues(protocol, name),
		}
	}
	c := &commandMetrics{byName: make(map[string]commandSeries, len(names)), other: series(protocols.CommandOther)}
	for _, n := range names {
		c.byName[n] = series(n)
	}
	return c
}

// Command counts a command; a name outside the frontend's list counts as
// other.
func (c *commandMetrics) Command(name string, ok bool, d time.Duration) {
	s, known := c.byName[name]
	if !known {
		s = c.other
	}
	if ok {
		s.ok.Inc()
	} else {
		s.failed.Inc()
	}
	s.duration.Observe(d.Seconds())
}

// deliveryKey names one delivery series.
type deliveryKey struct {
	result protocols.DeliveryResult
	class  protocols.ReplyClass
}

// deliveryMetrics is the protocols.DeliveryObserver of one SMTP mode.
type deliveryMetrics struct {
	series map[deliveryKey]prometheus.Counter
	// other counts a combination outside the known ones.
	other prometheus.Counter
}

var _ protocols.DeliveryObserver = (*deliveryMetrics)(nil)

// deliveries returns the observer of mode's message transactions;
// every series exists from then on, at 0.
func (f *frontendMetrics) deliveries(mode string) *deliveryMetrics {
	d := &deliveryMetrics{series: map[deliveryKey]prometheus.Counter{}}
	add := func(r protocols.DeliveryResult, c protocols.ReplyClass) {
		d.series[deliveryKey{r, c}] = f.delivered.WithLabelValues(mode, string(r), string(c))
	}
	add(protocols.DeliveryAccepted, protocols.ClassNone)
	for _, r := range []protocols.DeliveryResult{protocols.DeliveryTemporary, protocols.DeliveryPermanent} {
		for _, c := range protocols.RefusalClasses {
			add(r, c)
		}
	}
	d.other = d.series[deliveryKey{protocols.DeliveryPermanent, protocols.ClassOther}]
	return d
}

// Delivery counts a message transaction.
func (d *deliveryMetrics) Delivery(result protocols.DeliveryResult, class protocols.ReplyClass) {
	c, ok := d.series[deliveryKey{result, class}]
	if !ok {
		c = d.other
	}
	c.Inc()
}
