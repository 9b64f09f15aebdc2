package targets

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/mailcluster/mailcluster/node"
)

// TestMailnodeConfig checks the configuration the single target writes
// against mailnode's own parser: a renamed key would fail here, not in
// the middle of a benchmark.
func TestMailnodeConfig(t *testing.T) {
	dir := t.TempDir()
	conf := mailnodeConfig("mail.bench.test", filepath.Join(dir, "data"), []int{1025, 1143, 1110, 1980}, "/c.pem", "/k.pem")
	cfg, err := node.Parse("mailnode.toml", []byte(conf))
	if err != nil {
		t.Fatalf("mailnode rejects the harness's config: %v", err)
	}
	if cfg.Listen.SMTP != "127.0.0.1:1025" || cfg.Listen.IMAP != "127.0.0.1:1143" || cfg.Listen.POP3 != "127.0.0.1:1110" {
		t.Fatalf("listeners %+v", cfg.Listen)
	}
	if cfg.Listen.Submission != "" || cfg.Listen.IMAPS != "" || cfg.TLS.CertFile != "/c.pem" {
		t.Fatalf("config %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("mailnode finds the harness's config invalid: %v", err)
	}
	for _, m := range regexp.MustCompile(`"([^"]*):(\d+)"`).FindAllStringSubmatch(conf, -1) {
		if m[1] != "127.0.0.1" {
			t.Errorf("listener %s is not on loopback", m[0])
		}
	}
}

func TestDovecotConfig(t *testing.T) {
	c := dovecotConfig{
		Dir: "/run/x", Instance: "mb", Hostname: "mail.bench.test", Domain: "bench.test", CertFile: "/x/c.pem", KeyFile: "/x/k.pem",
		IMAPPort: 2143, POP3Port: 2110, LMTPPort: 2424, SMTPPort: 2525, MailLocation: "maildir:~/Maildir",
		PostfixQueue: "/x/q", PostfixData: "/x/d", UsersFile: "/x/users", MailboxesFile: "/x/vmailbox", MailRoot: "/x/mail",
		LogDir: "/x/log", MailUser: "nobody", MailGroup: "nogroup", MaxMessage: 1 << 20,
	}
	dc, err := render(dovecotConfTemplate, c)
	if err != nil {
		t.Fatal(err)
	}
	main, err := render(postfixMainTemplate, c)
	if err != nil {
		t.Fatal(err)
	}
	master, err := render(postfixMasterTemplate, c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"mail_fsync = always", "listen = 127.0.0.1", "port = 2143", "port = 2110", "port = 2424",
		"args = scheme=ARGON2ID /x/users", "special_use = \\Trash", "ssl_min_protocol = TLSv1.2", "mail_location = maildir:~/Maildir"} {
		if !bytes.Contains(dc, []byte(want)) {
			t.Errorf("dovecot.conf lacks %q", want)
		}
	}
	for _, want := range []string{"inet_interfaces = 127.0.0.1", "virtual_transport = lmtp:inet:127.0.0.1:2424",
		"virtual_mailbox_domains = bench.test", "message_size_limit = 1048576", "queue_directory = /x/q"} {
		if !bytes.Contains(main, []byte(want)) {
			t.Errorf("main.cf lacks %q", want)
		}
	}
	if !bytes.Contains(master, []byte("127.0.0.1:2525 inet")) {
		t.Error("master.cf does not listen on 127.0.0.1:2525")
	}
	if bytes.Contains(master, []byte("\nsmtp      inet")) {
		t.Error("master.cf listens on the system's SMTP port")
	}
}

// TestArgon2idPHC verifies the Dovecot password hash independently: the
// PHC string's parameters and salt reproduce its hash.
func TestArgon2idPHC(t *testing.T) {
	h, err := argon2idPHC("bench-password-1")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$`).FindStringSubmatch(h)
	if m == nil {
		t.Fatalf("hash %q is not a PHC argon2id string", h)
	}
	mem, _ := strconv.Atoi(m[1])
	iter, _ := strconv.Atoi(m[2])
	par, _ := strconv.Atoi(m[3])
	if mem != 19*1024 || iter != 2 || par != 1 {
		t.Fatalf("parameters m=%d t=%d p=%d, want mailnode's 19456/2/1", mem, iter, par)
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(m[4])
	sum, err2 := base64.RawStdEncoding.DecodeString(m[5])
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	if got := argon2.IDKey([]byte("bench-password-1"), salt, uint32(iter), uint32(mem), uint8(par), uint32(len(sum))); !bytes.Equal(got, sum) {
		t.Fatal("hash does not verify")
	}
	if h2, _ := argon2idPHC("bench-password-1"); h2 == h {
		t.Fatal("two hashes share a salt")
	}
}

func TestCertificate(t *testing.T) {
	c, err := NewCertificate("mail.bench.test")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), c.ClientTLS())
	if err != nil {
		t.Fatalf("client does not verify the run's certificate: %v", err)
	}
	conn.Close()
	other := c.ClientTLS()
	other.ServerName = "other.example"
	if conn, err := tls.Dial("tcp", ln.Addr().String(), other); err == nil {
		conn.Close()
		t.Fatal("a certificate for another name was accepted")
	}
}

func TestDiskUsage(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a"), make([]byte, 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(filepath.Join(dir, "sub", "b"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := diskUsage(dir, filepath.Join(dir, "missing"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Files != 2 || d.Apparent != 10005 || d.Allocated < 8192 {
		t.Fatalf("disk usage %+v", d)
	}
}

func TestWaits(t *testing.T) {
	ports, err := freePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	if ports[0] == ports[1] || ports[1] == ports[2] || ports[0] == ports[2] {
		t.Fatalf("ports not distinct: %v", ports)
	}
	// Nothing listens on a released port: the wait gives up in time.
	start := time.Now()
	err = waitGreeting(context.Background(), net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])), "220", 300*time.Millisecond)
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("wait on a closed port: %v after %v", err, time.Since(start))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("220 ready\r\n"))
			c.Close()
		}
	}()
	if err := waitGreeting(context.Background(), ln.Addr().String(), "220", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := waitGreeting(context.Background(), ln.Addr().String(), "* OK", 300*time.Millisecond); err == nil {
		t.Fatal("a wrong greeting passed")
	}
}

func TestNew(t *testing.T) {
	for _, name := range []string{"mox", "maddy"} {
		if _, err := New(name, Options{}); !errors.Is(err, ErrUnavailable) {
			t.Errorf("New(%s) = %v, want ErrUnavailable", name, err)
		}
	}
	for _, name := range []string{"single", "cluster3"} {
		if _, err := New(name, Options{Mailnode: filepath.Join(t.TempDir(), "none")}); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s without a binary: %v", name, err)
		}
	}
	bin := filepath.Join(t.TempDir(), "mailnode")
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	tg, err := New("cluster3", Options{Mailnode: bin, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tg.(MultiNode); !ok {
		t.Error("cluster3 does not list its nodes")
	}
	if ids := tg.(*cluster3).NodeIDs(); len(ids) != 3 || ids[0] != "n1" || ids[2] != "n3" {
		t.Errorf("node ids %v", ids)
	}
	if _, err := New("exchange", Options{}); err == nil || errors.Is(err, ErrUnavailable) {
		t.Errorf("unknown target: %v", err)
	}
}
