package targets

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// User is one mail account the harness creates on a target.
type User struct {
	Address  string
	Password string
}

// Endpoints are the loopback addresses a target serves the workloads on.
type Endpoints struct {
	// SMTP accepts inbound mail for local users, like an MX: STARTTLS
	// offered, no authentication.
	SMTP string `json:"smtp"`
	// IMAP offers STARTTLS; login is AUTH=PLAIN after TLS.
	IMAP string `json:"imap"`
	// POP3 offers STLS; login is SASL PLAIN after TLS.
	POP3 string `json:"pop3"`
}

// Info describes a target for the report: what software, with which
// durability and security settings, so that figures are read in context.
type Info struct {
	Name     string `json:"name"`
	Software string `json:"software"`
	// Durability says when a message is acknowledged and how it is made
	// durable (fsync, replication).
	Durability string `json:"durability"`
	// Storage is the storage format and whether data is encrypted.
	Storage string `json:"storage"`
	// Auth is the password hashing and caching in force.
	Auth string `json:"auth"`
	// TLS is how the clients connect.
	TLS string `json:"tls"`
	// Settings are the non-default settings, name to value.
	Settings map[string]string `json:"settings,omitempty"`
}

// Process is one server process of a target, named so that a failed
// run can say what each process logged and, while it runs, what its
// goroutines wait on.
type Process struct {
	Name string
	// Log is the file the process's output goes to.
	Log string
	// Debug is the base URL of its Go debug endpoints (/debug/pprof/),
	// empty when it does not run.
	Debug string
}

// Disk is the size of a target's stored mail.
type Disk struct {
	// Allocated is the bytes of disk blocks the files occupy.
	Allocated int64 `json:"allocated_bytes"`
	// Apparent is the sum of the files' sizes.
	Apparent int64 `json:"apparent_bytes"`
	// Files is how many files hold the data.
	Files int `json:"files"`
}

// Target is one mail server setup the harness starts, measures and stops.
// The same workload code drives every Target.
type Target interface {
	// Info describes the target; it is complete after Start.
	Info() Info
	// Start launches the target in its own directory on loopback ports
	// and creates users (and their domain). It returns when the target
	// serves every endpoint.
	Start(ctx context.Context, users []User) error
	// Endpoints are valid between Start and Stop; they do not change
	// across Compact.
	Endpoints() Endpoints
	// ClientTLS is the TLS configuration that verifies the target.
	ClientTLS() *tls.Config
	// Compact brings the stored mail to its compacted state (what an
	// operator's maintenance would), so that Disk measures steady-state
	// storage. The target serves again when it returns.
	Compact(ctx context.Context) error
	// Disk measures the stored mail (data files, not logs).
	Disk() (Disk, error)
	// Stop stops every process of the target. It is idempotent.
	Stop() error
}

// Options are what every target is built with.
type Options struct {
	// Dir is a fresh directory the target owns (created by the caller).
	Dir string
	// Domain is the users' mail domain.
	Domain string
	// Cert is the certificate every target serves.
	Cert *Certificate
	// Logger receives progress messages.
	Logger *slog.Logger
	// Mailnode is the path of the mailnode binary (targets single and
	// cluster3).
	Mailnode string
	// DovecotFormat is "maildir" or "sdbox" (target dovecot).
	DovecotFormat string
	// Install allows installing missing Debian packages (target dovecot).
	Install bool
}

// MultiNode is implemented by a target of several nodes, each of which
// serves every user on every endpoint.
type MultiNode interface {
	// NodeEndpoints returns every node's endpoints, in node order; they
	// are valid between Start and Stop.
	NodeEndpoints() []Endpoints
}

// AllEndpoints returns the endpoints of every node of t: one entry for a
// target of one node.
func AllEndpoints(t Target) []Endpoints {
	if m, ok := t.(MultiNode); ok {
		return m.NodeEndpoints()
	}
	return []Endpoints{t.Endpoints()}
}

// Names lists the targets the harness knows, in report order.
func Names() []string {
	return []string{"single", "cluster3", "dovecot"}
}

// ErrUnavailable is returned by New for a target that cannot run here.
var ErrUnavailable = errors.New("target unavailable")

// New returns the named target, not started.
func New(name string, opts Options) (Target, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	switch name {
	case "single":
		return newMailnode(opts)
	case "dovecot":
		return newDovecot(opts)
	case "cluster3":
		return newCluster3(opts)
	case "mox", "maddy":
		return nil, fmt.Errorf("%w: %s cannot be built here (the Go module proxy answers 403 for it)", ErrUnavailable, name)
	}
	return nil, fmt.Errorf("unknown target %q (known: %s)", name, strings.Join(Names(), ", "))
}

// freePorts reserves n distinct loopback ports by binding them, then
// releases them for the target's processes to bind.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for len(ports) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve a port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitFor polls cond every interval until it returns nil, ctx ends or
// timeout passes; the error says what was last wrong.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not ready after %v: %w", what, timeout, err)
		case <-tick.C:
		}
	}
}

// waitGreeting waits until addr accepts a connection and sends a line
// starting with prefix.
func waitGreeting(ctx context.Context, addr, prefix string, timeout time.Duration) error {
	return waitFor(ctx, timeout, addr, func() error {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 512)
		n, err := conn.Read(buf)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(string(buf[:n]), prefix) {
			return fmt.Errorf("greeting %q", strings.TrimSpace(string(buf[:n])))
		}
		return nil
	})
}

// diskUsage sums the regular files under the given roots; a missing root
// counts as empty.
func diskUsage(roots ...string) (Disk, error) {
	var d Disk
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !e.Type().IsRegular() {
				return nil
			}
			info, err := e.Info()
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			d.Files++
			d.Apparent += info.Size()
			d.Allocated += allocated(info)
			return nil
		})
		if err != nil {
			return d, fmt.Errorf("disk usage of %s: %w", root, err)
		}
	}
	return d, nil
}

// writeFile writes a file, creating its directory.
func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, mode)
}
