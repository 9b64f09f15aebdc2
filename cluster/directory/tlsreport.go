package directory

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// The counts of TLS outcomes for the daily TLS reports (RFC 8460) are
// kept in the meta shard, so that they survive a restart and one node's
// report covers every node: each node stores its own counts of a period
// under "tlsrpt/counts/<end>/<node>" (sealed under the meta key: they
// name the domains users send to), the node that reports a period first
// claims it under "tlsrpt/sent/<end>" (compare-and-set), and the counts
// of a reported period are deleted. <end> is the period's end in Unix
// seconds, zero-padded so that keys sort by time.
const (
	tlsReportCountsPrefix = "tlsrpt/counts/"
	tlsReportSentPrefix   = "tlsrpt/sent/"
	// maxTLSReportCounts bounds one node's stored counts of a period.
	maxTLSReportCounts = 8 << 20
)

func tlsReportPeriod(end int64) string { return fmt.Sprintf("%020d", end) }

func tlsReportCountsKey(end int64, node string) string {
	return tlsReportCountsPrefix + tlsReportPeriod(end) + "/" + node
}

// SaveTLSReportCounts stores a node's counts (opaque bytes, JSON of
// tlsrpt.State) of the report period that ends at end, replacing what
// the node stored for it before.
func (d *Directory) SaveTLSReportCounts(ctx context.Context, end int64, node string, counts []byte) error {
	if node == "" || strings.Contains(node, "/") {
		return fmt.Errorf("save TLS report counts: node id %q: %w", node, schema.ErrInvalid)
	}
	if len(counts) > maxTLSReportCounts {
		return fmt.Errorf("save TLS report counts: %d bytes: %w", len(counts), schema.ErrInvalid)
	}
	key := tlsReportCountsKey(end, node)
	sealed, err := d.sealer.Seal(d.keys.meta, seal.KindSetting, nil, []byte(key), counts)
	if err != nil {
		return err
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: key, Value: sealed}); err != nil {
		return fmt.Errorf("save TLS report counts: %w", err)
	}
	return nil
}

// TLSReportCounts returns the stored counts of every period not yet
// deleted: period end -> node -> counts. Values that do not open are
// left out.
func (d *Directory) TLSReportCounts(ctx context.Context) (map[int64]map[string][]byte, error) {
	_ = d.c.CatchUpMeta(ctx) // best effort: else this node's view
	var raw map[string][]byte
	if err := d.c.ViewMeta(func(r *raftstore.Reader) error { raw = r.Settings(tlsReportCountsPrefix); return nil }); err != nil {
		return nil, fmt.Errorf("read TLS report counts: %w", err)
	}
	out := map[int64]map[string][]byte{}
	for key, sealed := range raw {
		period, node, ok := strings.Cut(strings.TrimPrefix(key, tlsReportCountsPrefix), "/")
		end, err := strconv.ParseInt(period, 10, 64)
		if !ok || err != nil {
			continue
		}
		b, err := d.sealer.Open(d.keys.meta, seal.KindSetting, nil, []byte(key), sealed)
		if err != nil {
			d.log.Warn("TLS report counts do not open", "key", key, "err", err)
			continue
		}
		if out[end] == nil {
			out[end] = map[string][]byte{}
		}
		out[end][node] = b
	}
	return out, ctx.Err()
}

// ClaimTLSReport records that node reports the period that ends at end.
// It reports false when another node claimed it first.
func (d *Directory) ClaimTLSReport(ctx context.Context, end int64, node string) (bool, error) {
	_, err := d.c.Apply(ctx, MetaShard, &schema.SwapSetting{Key: tlsReportSentPrefix + tlsReportPeriod(end), OldAbsent: true, New: []byte(node)})
	if errors.Is(err, schema.ErrConflict) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claim TLS report: %w", err)
	}
	return true, nil
}

// TLSReportClaimed reports whether the period that ends at end was
// claimed (and so reported, or being reported).
func (d *Directory) TLSReportClaimed(end int64) (bool, error) {
	v, err := d.setting(tlsReportSentPrefix + tlsReportPeriod(end))
	return v != nil, err
}

// DeleteTLSReportCounts deletes the stored counts of the period that
// ends at end, of every node.
func (d *Directory) DeleteTLSReportCounts(ctx context.Context, end int64) error {
	var keys []string
	_ = d.c.ViewMeta(func(r *raftstore.Reader) error {
		for k := range r.Settings(tlsReportCountsPrefix + tlsReportPeriod(end) + "/") {
			keys = append(keys, k)
		}
		return nil
	})
	for _, k := range keys {
		if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: k}); err != nil {
			return fmt.Errorf("delete TLS report counts: %w", err)
		}
	}
	return nil
}

// PruneTLSReportClaims deletes the claims of periods that ended before
// before.
func (d *Directory) PruneTLSReportClaims(ctx context.Context, before int64) error {
	var keys []string
	_ = d.c.ViewMeta(func(r *raftstore.Reader) error {
		for k := range r.Settings(tlsReportSentPrefix) {
			end, err := strconv.ParseInt(strings.TrimPrefix(k, tlsReportSentPrefix), 10, 64)
			if err == nil && end < before {
				keys = append(keys, k)
			}
		}
		return nil
	})
	for _, k := range keys {
		if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: k}); err != nil {
			return fmt.Errorf("prune TLS report claims: %w", err)
		}
	}
	return nil
}
