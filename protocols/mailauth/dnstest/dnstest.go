// Package dnstest runs a real authoritative DNS server (NSD, from
// Debian's nsd package) on loopback for tests of code that resolves
// names: sender checks, DKIM keys, MX lookups, MTA-STS.
package dnstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// StartNSD serves zones (name -> zone file body) from a real NSD on a
// loopback port and returns its address. It skips when NSD is missing,
// unless MAILCLUSTER_REQUIRE_NSD is set.
func StartNSD(t *testing.T, zones map[string]string) string {
	t.Helper()
	bin, err := exec.LookPath("nsd")
	if err != nil {
		if p, serr := exec.LookPath("/usr/sbin/nsd"); serr == nil {
			bin, err = p, nil
		}
	}
	if err != nil {
		if os.Getenv("MAILCLUSTER_REQUIRE_NSD") != "" {
			t.Fatalf("nsd is required (MAILCLUSTER_REQUIRE_NSD): %v", err)
		}
		t.Skipf("nsd not installed: %v", err)
	}
	dir := t.TempDir()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "server:\n  ip-address: 127.0.0.1\n  port: %d\n  username: \"\"\n  chroot: \"\"\n  zonesdir: %q\n  pidfile: %q\n  logfile: %q\n  database: \"\"\n  xfrdfile: %q\n  zonelistfile: %q\n  server-count: 1\n  verbosity: 1\nremote-control:\n  control-enable: no\n",
		port, dir, filepath.Join(dir, "nsd.pid"), filepath.Join(dir, "nsd.log"), filepath.Join(dir, "xfrd.state"), filepath.Join(dir, "zone.list"))
	for name, body := range zones {
		file := name + ".zone"
		if err := os.WriteFile(filepath.Join(dir, file), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&conf, "zone:\n  name: %s\n  zonefile: %s\n", name, file)
	}
	confPath := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-d", "-c", confPath)
	out, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nsd: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		out.Close()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var name string
		for n := range zones {
			name = n
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := r.LookupTXT(ctx, name)
		cancel()
		var dnsErr *net.DNSError
		if err == nil || (errors.As(err, &dnsErr) && dnsErr.IsNotFound) {
			return addr
		}
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(dir, "stderr.log"))
			t.Fatalf("nsd exited: %s", b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "stderr.log"))
			t.Fatalf("nsd not answering on %s: %v\n%s", addr, err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freePort returns a loopback port free for both UDP and TCP (NSD binds
// both; a port free for UDP alone is often the local port of one of the
// tests' TCP connections).
func freePort() (int, error) {
	for i := 0; ; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port, nil
		}
		if i >= 100 {
			return 0, fmt.Errorf("no loopback port free for UDP and TCP: %w", err)
		}
	}
}

// ZoneFile returns a zone file for origin: SOA, NS, the name server's
// address (127.0.0.1) and records, one per line, in zone file syntax.
func ZoneFile(origin string, records ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s.\n$TTL 300\n@ IN SOA ns.%s. hostmaster.%s. 1 3600 600 86400 300\n@ IN NS ns.%s.\nns IN A 127.0.0.1\n", origin, origin, origin, origin)
	for _, r := range records {
		b.WriteString(r + "\n")
	}
	return b.String()
}
