package node

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/mailcluster/mailcluster/cluster/directory"
)

// parseQuota reads the quota argument of "mailnode user quota": a size
// ("2GiB", "500MB", bytes), "none" (unlimited) or "default" (the
// cluster's limits.default_quota).
func parseQuota(s string) (directory.QuotaSetting, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "none", "unlimited":
		return directory.QuotaSetting{}, nil
	case "default":
		return directory.QuotaSetting{Default: true}, nil
	}
	n, err := ParseByteSize(s)
	if err != nil {
		return directory.QuotaSetting{}, fmt.Errorf("quota: %v, none or default", err)
	}
	if n == 0 {
		return directory.QuotaSetting{}, fmt.Errorf("quota 0: say none for unlimited")
	}
	return directory.QuotaSetting{Bytes: uint64(n)}, nil
}

// describeQuota says what a quota is, for the CLI.
func describeQuota(bytes uint64, isDefault bool) string {
	switch {
	case isDefault:
		return "the cluster's default"
	case bytes == 0:
		return "unlimited"
	}
	return formatBytes(bytes)
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
