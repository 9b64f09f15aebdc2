package targets

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Bounds of the single target's start-up and admin commands.
const (
	mailnodeReadyTimeout = 90 * time.Second
	mailnodeAdminTimeout = 2 * time.Minute
	mailnodeStopGrace    = 30 * time.Second
)

// mailnode is the "single" target: one mailnode process with the real
// settings (fsync on, encryption on), on loopback ports in its own
// directory.
type mailnode struct {
	opts    Options
	log     *slog.Logger
	bin     string
	dir     string
	data    string
	config  string
	ports   []int
	proc    *process
	version string
}

func newMailnode(opts Options) (*mailnode, error) {
	bin := opts.Mailnode
	if bin == "" {
		bin = "bin/mailnode"
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("%w: mailnode binary %s: %v (run `make build`)", ErrUnavailable, bin, err)
	}
	return &mailnode{opts: opts, log: opts.Logger.With("target", "single"), bin: abs, dir: opts.Dir,
		data: filepath.Join(opts.Dir, "data"), config: filepath.Join(opts.Dir, "mailnode.toml")}, nil
}

func (m *mailnode) Info() Info {
	return Info{
		Name:     "single",
		Software: m.version,
		Durability: "250/OK after the Raft commit: the message's log entry is fsynced (raft-wal segment file) and applied; " +
			"the bbolt state file takes applied entries in groups, fsynced within 150 ms or 4 MiB, and the log keeps them " +
			"until then (a crash replays them); 1 replica (single voter)",
		Storage: "8 mail shards, each a Raft log (raft-wal) and a bbolt state file; every message, header and flag encrypted " +
			"(zstd, then XChaCha20-Poly1305 with a per-user key)",
		Auth: "argon2id (m=19 MiB, t=2, p=1) with a 5-minute in-memory cache of verified logins",
		TLS:  "SMTP STARTTLS (MX port, no AUTH); IMAP STARTTLS + AUTHENTICATE PLAIN; POP3 STLS + AUTH PLAIN",
		Settings: map[string]string{
			"config": "mailnode defaults; listeners on 127.0.0.1, the run's certificate, log level warn",
		},
	}
}

// ProfileURLs is the node's CPU profile endpoint (the harness's config
// switches [debug] pprof on).
func (m *mailnode) ProfileURLs() []string {
	if len(m.ports) < 4 {
		return nil
	}
	return []string{fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile", m.ports[3])}
}

// Processes is the node's process: its log and, while it runs, its
// debug endpoints.
func (m *mailnode) Processes() []Process {
	p := Process{Name: "mailnode", Log: filepath.Join(m.dir, "mailnode.log")}
	if m.proc != nil && len(m.ports) >= 4 {
		if done, _ := m.proc.exited(); !done {
			p.Debug = fmt.Sprintf("http://127.0.0.1:%d", m.ports[3])
		}
	}
	return []Process{p}
}

func (m *mailnode) Endpoints() Endpoints {
	if len(m.ports) < 3 {
		return Endpoints{}
	}
	return Endpoints{
		SMTP: fmt.Sprintf("127.0.0.1:%d", m.ports[0]),
		IMAP: fmt.Sprintf("127.0.0.1:%d", m.ports[1]),
		POP3: fmt.Sprintf("127.0.0.1:%d", m.ports[2]),
	}
}

func (m *mailnode) ClientTLS() *tls.Config { return m.opts.Cert.ClientTLS() }

func (m *mailnode) Start(ctx context.Context, users []User) error {
	out, err := run(30*time.Second, "", nil, m.bin, "version")
	if err != nil {
		return err
	}
	m.version = strings.TrimSpace(string(out))
	certFile, keyFile, err := m.opts.Cert.Write(filepath.Join(m.dir, "tls"))
	if err != nil {
		return err
	}
	if m.ports, err = freePorts(4); err != nil {
		return err
	}
	conf := mailnodeConfig(m.opts.Cert.Hostname, m.data, m.ports, certFile, keyFile)
	if err := writeFile(m.config, []byte(conf), 0o644); err != nil {
		return err
	}
	if err := m.serve(ctx); err != nil {
		return err
	}
	if _, err := m.admin("", "domain", "add", "--data", m.data, m.opts.Domain); err != nil {
		return err
	}
	for _, u := range users {
		if _, err := m.admin(u.Password+"\n", "user", "add", "--data", m.data, u.Address); err != nil {
			return err
		}
	}
	m.log.Info("started", "version", m.version, "users", len(users), "endpoints", m.Endpoints())
	return nil
}

// serve starts the node and waits until it is ready and every endpoint
// greets.
func (m *mailnode) serve(ctx context.Context) error {
	p, err := startProcess("mailnode", filepath.Join(m.dir, "mailnode.log"), nil,
		m.bin, "serve", "--config", m.config)
	if err != nil {
		return err
	}
	m.proc = p
	err = waitFor(ctx, mailnodeReadyTimeout, "mailnode", func() error {
		if done, err := p.exited(); done {
			return errors.Join(errors.New("mailnode exited (see mailnode.log)"), err)
		}
		out, err := run(10*time.Second, "", nil, m.bin, "status", "--data", m.data, "--json")
		if err != nil {
			return err
		}
		var st struct {
			Ready      bool   `json:"ready"`
			ReadyError string `json:"ready_error"`
		}
		if err := json.Unmarshal(out, &st); err != nil {
			return fmt.Errorf("status: %w", err)
		}
		if !st.Ready {
			return errors.New(st.ReadyError)
		}
		return nil
	})
	if err != nil {
		return err
	}
	ep := m.Endpoints()
	for _, w := range []struct{ addr, prefix string }{{ep.SMTP, "220"}, {ep.IMAP, "* OK"}, {ep.POP3, "+OK"}} {
		if err := waitGreeting(ctx, w.addr, w.prefix, 30*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// admin runs a mailnode admin command.
func (m *mailnode) admin(stdin string, args ...string) ([]byte, error) {
	return run(mailnodeAdminTimeout, stdin, nil, append([]string{m.bin}, args...)...)
}

// Compact snapshots every shard through the running node (truncating the
// Raft logs), stops it, rewrites the shard files without free pages, and
// starts it again: what `mailnode compact` offers an operator.
func (m *mailnode) Compact(ctx context.Context) error {
	if _, err := m.admin("", "compact", "--data", m.data); err != nil {
		return fmt.Errorf("online compact: %w", err)
	}
	if err := m.proc.stop(mailnodeStopGrace); err != nil {
		return err
	}
	if _, err := m.admin("", "compact", "--data", m.data); err != nil {
		return fmt.Errorf("offline compact: %w", err)
	}
	return m.serve(ctx)
}

// Disk measures the shard directories (Raft logs, snapshots, state
// files); keys, certificates and the admin socket are left out.
func (m *mailnode) Disk() (Disk, error) {
	return diskUsage(filepath.Join(m.data, "shards"))
}

func (m *mailnode) Stop() error {
	err := m.proc.stop(mailnodeStopGrace)
	m.proc = nil
	return err
}

// Pause stops the node, keeping its data, until Resume.
func (m *mailnode) Pause() error { return m.Stop() }

// Resume starts the paused node again on its data.
func (m *mailnode) Resume(ctx context.Context) error { return m.serve(ctx) }

// mailnodeConfig is the single node's TOML configuration: the defaults,
// every listener on 127.0.0.1 (ports: SMTP, IMAP, POP3, HTTP), no
// submission or implicit-TLS listeners, the run's certificate.
func mailnodeConfig(hostname, data string, ports []int, certFile, keyFile string) string {
	return nodeConfig{Hostname: hostname, Data: data, CertFile: certFile, KeyFile: keyFile,
		SMTP: ports[0], IMAP: ports[1], POP3: ports[2], HTTP: ports[3]}.render()
}

// nodeConfig is what a mailnode configuration file written by the
// harness says; everything else keeps mailnode's defaults.
type nodeConfig struct {
	Hostname, Data, CertFile, KeyFile string
	// SMTP, IMAP, POP3 and HTTP are the node's ports on 127.0.0.1.
	SMTP, IMAP, POP3, HTTP int
	// Cluster is the cluster port on 127.0.0.1 (0: any free port, for a
	// node that stays alone).
	Cluster int
	// Replicas is how many replicas each mail shard keeps (0: the default).
	Replicas int
}

// render returns the TOML file: every listener on 127.0.0.1, no
// submission or implicit-TLS listeners, the run's certificate.
func (c nodeConfig) render() string {
	var replicas string
	if c.Replicas > 0 {
		replicas = fmt.Sprintf("replicas    = %d\n", c.Replicas)
	}
	return fmt.Sprintf(`# Written by mailbench: the defaults, on loopback, with the run's certificate.
hostname = %q
data_dir = %q

[listen]
smtp        = "127.0.0.1:%d"
submission  = ""
submissions = ""
imap        = "127.0.0.1:%d"
imaps       = ""
pop3        = "127.0.0.1:%d"
pop3s       = ""
http        = "127.0.0.1:%d"
https       = ""

[cluster]
listen      = "127.0.0.1:%d"
%s
[tls]
cert_file = %q
key_file  = %q

# Every benchmark client connects from 127.0.0.1, one client address for
# the whole load: the per-address command rate is raised far above what
# the workloads send, so the run measures the store, not the limiter.
[limits]
commands_per_second = 1000000
command_burst       = 2000000

[log]
level  = "warn"
format = "json"

[debug]
pprof = true
`, c.Hostname, c.Data, c.SMTP, c.IMAP, c.POP3, c.HTTP, c.Cluster, replicas, c.CertFile, c.KeyFile)
}
