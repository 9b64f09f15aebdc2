//go:build !linux

package e2e

import "syscall"

// childProcAttr has no parent-death signal outside Linux; nodes are
// still stopped by the tests that start them.
func childProcAttr() *syscall.SysProcAttr { return nil }
