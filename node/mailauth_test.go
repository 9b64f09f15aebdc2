package node

import (
	"bufio"
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

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/cluster/directory"
)

// startNSD serves zones (name -> zone file body) from a real NSD on a
// loopback port and returns its address. It skips when NSD is missing,
// unless MAILCLUSTER_REQUIRE_NSD is set.
func startNSD(t *testing.T, zones map[string]string) string {
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
	ln, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.LocalAddr().(*net.UDPAddr).Port
	ln.Close()
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
	r := DNSConfig{Servers: []string{addr}, Timeout: time.Second}.resolver()
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

func zoneFile(origin string, records ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s.\n$TTL 300\n@ IN SOA ns.%s. hostmaster.%s. 1 3600 600 86400 300\n@ IN NS ns.%s.\nns IN A 127.0.0.1\n", origin, origin, origin, origin)
	for _, r := range records {
		b.WriteString(r + "\n")
	}
	return b.String()
}

// TestNodeSenderChecks: a node whose resolver is a real NSD on loopback
// refuses mail from a domain publishing DMARC p=reject that fails SPF,
// and records spf=pass and dmarc=pass in the Authentication-Results of
// mail from a domain whose SPF lets 127.0.0.1 send.
func TestNodeSenderChecks(t *testing.T) {
	dns := startNSD(t, map[string]string{
		"sender.test": zoneFile("sender.test", `@ IN TXT "v=spf1 ip4:127.0.0.1 -all"`, `_dmarc IN TXT "v=DMARC1; p=reject"`),
		"spoof.test":  zoneFile("spoof.test", `@ IN TXT "v=spf1 -all"`, `_dmarc IN TXT "v=DMARC1; p=reject"`),
	})
	cfg := testConfig(t)
	cfg.DNS = DNSConfig{Servers: []string{dns}, Timeout: 2 * time.Second}
	cfg.Inbound.CheckSender = true
	n := startNode(t, cfg)
	ctx := context.Background()
	if err := n.Directory().AddDomain(ctx, "example.test", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	if err := n.Directory().AddUser(ctx, "bob@example.test", "bob-password"); err != nil {
		t.Fatal(err)
	}
	send := func(from string) error {
		c, err := gosmtp.DialStartTLS(n.Addr(ListenSMTP).String(), clientTLS(t, cfg))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := "From: <" + from + ">\r\nTo: bob@example.test\r\nSubject: checks\r\n\r\nhello\r\n"
		return c.SendMail(from, []string{"bob@example.test"}, strings.NewReader(msg))
	}
	var se *gosmtp.SMTPError
	if err := send("ceo@spoof.test"); !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("spoofed sender: %v, want 550", err)
	}
	if err := send("ann@sender.test"); err != nil {
		t.Fatalf("sender with SPF pass: %v", err)
	}
	acct, err := n.store.AccountOf(ctx, "bob@example.test")
	if err != nil {
		t.Fatal(err)
	}
	defer acct.Close()
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := acct.Snapshot(ctx, inbox.ID)
	if err != nil || len(snap.Messages) != 1 {
		t.Fatalf("INBOX: %d messages, %v; want the one that passed", len(snap.Messages), err)
	}
	h, err := acct.Header(ctx, snap.Messages[0].Blob)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(h)))
	var ar string
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "Authentication-Results:") {
			ar = sc.Text()
		}
	}
	if !strings.Contains(ar, cfg.Hostname) || !strings.Contains(ar, "spf=pass") {
		t.Errorf("Authentication-Results %q; header:\n%s", ar, h)
	}
	if !strings.Contains(string(h), "dmarc=pass") {
		t.Errorf("no dmarc=pass in:\n%s", h)
	}
}
