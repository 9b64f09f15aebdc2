//go:build !unix

package node

// availableBytes is not measured on this platform.
func availableBytes(string) (float64, bool) { return 0, false }
