package workload

import (
	"context"
	"fmt"
	"time"

	"github.com/mailcluster/mailcluster/bench/targets"
)

// StorageResult is what the storage workload measured: the disk space
// the delivered mail takes once the target is compacted.
type StorageResult struct {
	// DeliveredMessages and DeliveredBytes are the acknowledged mail, as
	// sent (before the target added trace headers).
	DeliveredMessages int   `json:"delivered_messages"`
	DeliveredBytes    int64 `json:"delivered_bytes"`
	// Baseline is the target's storage with its users and no mail.
	Baseline targets.Disk `json:"baseline"`
	// After is the storage after delivery and compaction.
	After      targets.Disk `json:"after"`
	CompactSec float64      `json:"compact_sec"`
	// BytesPerByte is allocated disk bytes added per delivered byte.
	// (Allocated, not apparent, sizes: bbolt files are sparse.)
	BytesPerByte float64 `json:"bytes_per_byte"`
}

// Storage compacts the target and measures its storage against baseline
// (measured before any mail arrived).
func Storage(ctx context.Context, t targets.Target, baseline targets.Disk, messages int, delivered int64) (*StorageResult, error) {
	if delivered <= 0 {
		return nil, fmt.Errorf("storage: no mail was delivered")
	}
	t0 := time.Now()
	if err := t.Compact(ctx); err != nil {
		return nil, fmt.Errorf("storage: compact: %w", err)
	}
	compact := time.Since(t0)
	after, err := t.Disk()
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	return &StorageResult{
		DeliveredMessages: messages,
		DeliveredBytes:    delivered,
		Baseline:          baseline,
		After:             after,
		CompactSec:        compact.Seconds(),
		BytesPerByte:      float64(after.Allocated-baseline.Allocated) / float64(delivered),
	}, nil
}
