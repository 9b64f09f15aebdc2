//go:build !linux

package bench

// fileSystem is only known on Linux.
func fileSystem(string) string { return "" }
