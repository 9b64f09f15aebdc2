package node

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/mailcluster/mailcluster/cluster/directory"
)

// parseQuota reads the limit argument of "mailnode user quota": a size
// ("2GiB", "500MB", bytes) or with --messages a number of messages,
// "none" (unlimited) or "default" (the cluster's default).
func parseQuota(s string, messages bool) (directory.QuotaSetting, error) {
	q := directory.QuotaSetting{Resource: directory.QuotaStorage}
	if messages {
		q.Resource = directory.QuotaMessages
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "none", "unlimited":
		return q, nil
	case "default":
		q.Default = true
		return q, nil
	}
	if messages {
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 63)
		if err != nil || n == 0 {
			return q, fmt.Errorf("message quota %q: want a positive number of messages, none or default", s)
		}
		q.Limit = n
		return q, nil
	}
	n, err := ParseByteSize(s)
	if err != nil {
		return q, fmt.Errorf("quota: %v, none or default", err)
	}
	if n == 0 {
		return q, fmt.Errorf("quota 0: say none for unlimited")
	}
	q.Limit = uint64(n)
	return q, nil
}

// describeQuota says what a quota is, for the CLI.
func describeQuota(limit uint64, isDefault, messages bool) string {
	switch {
	case isDefault:
		return "the cluster's default"
	case limit == 0:
		return "unlimited"
	case messages:
		return strconv.FormatUint(limit, 10) + " messages"
	}
	return formatBytes(limit)
}

// formatBytes writes a size in the largest binary unit that keeps it
// readable, with the exact byte count.
func formatBytes(n uint64) string {
	units := []struct {
		name string
		size uint64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if n >= u.size {
			return strconv.FormatFloat(float64(n)/float64(u.size), 'f', 1, 64) + " " + u.name + " (" + strconv.FormatUint(n, 10) + " bytes)"
		}
	}
	return strconv.FormatUint(n, 10) + " bytes"
}
