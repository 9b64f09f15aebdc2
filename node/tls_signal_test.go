//go:build unix

package node

import (
	"syscall"
	"testing"
	"time"
)

// TestTLSReloadOnSIGHUP sends SIGHUP to the test process, as an operator
// does to mailnode: the running node (whose handler keeps the signal
// from ending the process) serves the replaced certificate.
func TestTLSReloadOnSIGHUP(t *testing.T) {
	first := newTestPair(t, 24*time.Hour)
	cfg, certFile, keyFile := tlsFileConfig(t, first, 0) // no file checks: only the signal reloads
	n := startNode(t, cfg)
	second := newTestPair(t, 24*time.Hour)
	second.install(t, certFile, keyFile)
	if got := servedSerial(t, n.Addr(ListenIMAPS)); got.Cmp(first.serial) != 0 {
		t.Fatalf("serves %x before SIGHUP, want %x", got, first.serial)
	}
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitServed(t, n.Addr(ListenIMAPS), second.serial, 10*time.Second)
	waitTLSMetric(t, n, `mail_tls_certificate_reloads_total{result="ok"}`, 1, 5*time.Second)
}
