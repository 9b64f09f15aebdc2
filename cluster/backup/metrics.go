package backup

import (
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the backup gauges and counters; they live on the registry
// the node passes in (never the global one), so several nodes can run in
// one process.
type metrics struct {
	runs          *prometheus.CounterVec
	lastSuccess   prometheus.Gauge
	lastDuration  prometheus.Gauge
	lastSize      prometheus.Gauge
	verifies      *prometheus.CounterVec
	drillResult   *prometheus.GaugeVec
	drillRTO      prometheus.Gauge
	drillRPO      prometheus.Gauge
	drillLast     prometheus.Gauge
	pruned        prometheus.Counter
	mu            sync.Mutex
	lastSuccessAt time.Time
}

func newMetrics(reg prometheus.Registerer, clock Clock) (*metrics, error) {
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_backup_runs_total", Help: "Backup runs by result (ok, failed).",
		}, []string{"result"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mail_backup_last_success_timestamp_seconds", Help: "Creation time of the newest backup complete on every target.",
		}),
		lastDuration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mail_backup_last_duration_seconds", Help: "How long the last successful backup run took.",
		}),
		lastSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mail_backup_last_size_bytes", Help: "Encrypted size of the newest complete backup.",
		}),
		verifies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_backup_verifications_total", Help: "Backup verifications by result (ok, failed).",
		}, []string{"result"}),
		drillResult: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mail_backup_drill_result", Help: "1 for the result of the last restore drill (ok or failed), 0 for the other.",
		}, []string{"result"}),
		drillRTO: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mail_backup_drill_rto_seconds", Help: "Time the last restore drill took to restore and verify the latest backup (measured RTO).",
		}),
		drillRPO: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mail_backup_drill_rpo_seconds", Help: "Age of the backup the last restore drill restored, when it started (measured RPO).",
		}),
		drillLast: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mail_backup_drill_last_timestamp_seconds", Help: "When the last restore drill ran.",
		}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mail_backup_pruned_total", Help: "Backups and partial backups deleted by retention.",
		}),
	}
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mail_backup_age_seconds", Help: "Age of the newest complete backup (the current RPO); 0 when none is known.",
	}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.lastSuccessAt.IsZero() {
			return 0
		}
		return clock.Now().Sub(m.lastSuccessAt).Seconds()
	})
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.runs, m.lastSuccess, m.lastDuration, m.lastSize, m.verifies,
		m.drillResult, m.drillRTO, m.drillRPO, m.drillLast, m.pruned, age} {
		errs = append(errs, reg.Register(c))
	}
	return m, errors.Join(errs...)
}

// observeBackup records the newest complete backup.
func (m *metrics) observeBackup(man *Manifest) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !man.Created.After(m.lastSuccessAt) {
		return
	}
	m.lastSuccessAt = man.Created
	m.lastSuccess.Set(float64(man.Created.UnixNano()) / 1e9)
	m.lastSize.Set(float64(man.Size()))
}

func (m *metrics) observeDrill(v *Verification) {
	ok, failed := 0.0, 1.0
	if v.OK {
		ok, failed = 1, 0
	}
	m.drillResult.WithLabelValues("ok").Set(ok)
	m.drillResult.WithLabelValues("failed").Set(failed)
	m.drillRTO.Set(v.RestoreSeconds)
	m.drillRPO.Set(v.BackupAgeSeconds)
	m.drillLast.Set(float64(v.Time.UnixNano()) / 1e9)
}

func result(err error) string {
	if err != nil {
		return "failed"
	}
	return "ok"
}
