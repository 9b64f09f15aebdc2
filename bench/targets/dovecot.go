package targets

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"
)

// Bounds of the dovecot target's start-up and shutdown.
const (
	dovecotReadyTimeout = 60 * time.Second
	dovecotStopGrace    = 20 * time.Second
	installTimeout      = 15 * time.Minute
	// dovecotMaxMessage matches mailnode's default message size limit.
	dovecotMaxMessage = 50 << 20
)

// debianPackages are what the dovecot target needs.
var debianPackages = []string{"dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd", "postfix"}

// dovecot is the "dovecot" target: Dovecot (IMAP, POP3, LMTP) from
// Debian's packages, with Postfix from Debian's packages in front for
// SMTP, both configured in the target's directory on loopback ports.
type dovecot struct {
	opts    Options
	log     *slog.Logger
	cfg     dovecotConfig
	dovecot *process
	postfix *process
	version string
}

func newDovecot(opts Options) (*dovecot, error) {
	format := opts.DovecotFormat
	if format == "" {
		format = "maildir"
	}
	var location string
	switch format {
	case "maildir":
		location = "maildir:~/Maildir"
	case "sdbox":
		location = "sdbox:~/sdbox"
	default:
		return nil, fmt.Errorf("dovecot format %q: want maildir or sdbox", format)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: the dovecot target must run as root (Dovecot and Postfix start as root and drop privileges)", ErrUnavailable)
	}
	d := &dovecot{opts: opts, log: opts.Logger.With("target", "dovecot")}
	d.cfg = dovecotConfig{
		Dir:           opts.Dir,
		Instance:      "mailbench-" + filepath.Base(opts.Dir),
		Hostname:      opts.Cert.Hostname,
		Domain:        opts.Domain,
		MailLocation:  location,
		PostfixConf:   filepath.Join(opts.Dir, "postfix"),
		PostfixQueue:  filepath.Join(opts.Dir, "postfix-queue"),
		PostfixData:   filepath.Join(opts.Dir, "postfix-data"),
		UsersFile:     filepath.Join(opts.Dir, "users"),
		MailboxesFile: filepath.Join(opts.Dir, "postfix", "vmailbox"),
		MailRoot:      filepath.Join(opts.Dir, "mail"),
		LogDir:        filepath.Join(opts.Dir, "log"),
		MailUser:      "nobody",
		MailGroup:     "nogroup",
		MaxMessage:    dovecotMaxMessage + 64<<10,
	}
	if err := d.ensureInstalled(); err != nil {
		return nil, err
	}
	return d, nil
}

// dovecotLibexec is where Dovecot's service programs are: doveconf's
// libexec_dir, or Debian's path.
func dovecotLibexec() string {
	if out, err := exec.Command("doveconf", "-h", "libexec_dir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); dir != "" {
			return dir
		}
	}
	return "/usr/lib/dovecot"
}

// ensureInstalled installs the Debian packages when a program is missing
// and installing is allowed.
func (d *dovecot) ensureInstalled() error {
	missing := func() []string {
		var m []string
		for _, p := range []string{"dovecot", "doveconf", "postfix", "postconf"} {
			if _, err := exec.LookPath(p); err != nil {
				m = append(m, p)
			}
		}
		// Dovecot's services come in packages of their own (a machine may
		// have dovecot-imapd alone, for other tests).
		for _, svc := range []string{"imap", "pop3", "lmtp"} {
			if _, err := os.Stat(filepath.Join(dovecotLibexec(), svc)); err != nil {
				m = append(m, "dovecot's "+svc)
			}
		}
		return m
	}
	m := missing()
	if len(m) == 0 {
		return nil
	}
	if !d.opts.Install {
		return fmt.Errorf("%w: %s not installed (install %s, or allow mailbench to)", ErrUnavailable,
			strings.Join(m, ", "), strings.Join(debianPackages, " "))
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("%w: %s not installed and no apt-get to install %s", ErrUnavailable,
			strings.Join(m, ", "), strings.Join(debianPackages, " "))
	}
	d.log.Warn("installing Debian packages for the dovecot target (apt-get)", "packages", strings.Join(debianPackages, " "))
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	if _, err := run(installTimeout, "", env, "apt-get", "update"); err != nil {
		return fmt.Errorf("apt-get update: %w", err)
	}
	args := append([]string{"apt-get", "install", "-y", "--no-install-recommends"}, debianPackages...)
	if _, err := run(installTimeout, "", env, args...); err != nil {
		return fmt.Errorf("apt-get install: %w", err)
	}
	if m := missing(); len(m) > 0 {
		return fmt.Errorf("%w: %s still missing after apt-get install", ErrUnavailable, strings.Join(m, ", "))
	}
	return nil
}

func (d *dovecot) Info() Info {
	return Info{
		Name:     "dovecot",
		Software: d.version,
		Durability: "Postfix answers 250 after fsyncing its queue file; Postfix then hands the message to " +
			"Dovecot over LMTP, which fsyncs it (mail_fsync = always) before answering; 1 replica",
		Storage: fmt.Sprintf("Dovecot %s with its index files; not encrypted", strings.SplitN(d.cfg.MailLocation, ":", 2)[0]),
		Auth: "passwd-file, argon2id (m=19 MiB, t=2, p=1, the same as mailnode); auth_cache_size = 10M, TTL 5 minutes, " +
			"auth_cache_verify_password_with_worker = yes (Dovecot verifies the hash again on a cache hit)",
		TLS: "SMTP STARTTLS (Postfix smtpd, no AUTH); IMAP STARTTLS + AUTHENTICATE PLAIN; POP3 STLS + AUTH PLAIN",
		Settings: map[string]string{
			"mail_location":  d.cfg.MailLocation,
			"mail_fsync":     "always",
			"login services": "high-performance mode (service_count = 0, process_min_avail = 2)",
			"postfix":        "virtual_transport = lmtp, chroot off, message_size_limit 50 MiB",
		},
	}
}

func (d *dovecot) Endpoints() Endpoints {
	if d.cfg.SMTPPort == 0 {
		return Endpoints{}
	}
	return Endpoints{
		SMTP: fmt.Sprintf("127.0.0.1:%d", d.cfg.SMTPPort),
		IMAP: fmt.Sprintf("127.0.0.1:%d", d.cfg.IMAPPort),
		POP3: fmt.Sprintf("127.0.0.1:%d", d.cfg.POP3Port),
	}
}

func (d *dovecot) ClientTLS() *tls.Config { return d.opts.Cert.ClientTLS() }

func (d *dovecot) Start(ctx context.Context, users []User) error {
	if err := d.versions(); err != nil {
		return err
	}
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	d.cfg.SMTPPort, d.cfg.IMAPPort, d.cfg.POP3Port, d.cfg.LMTPPort = ports[0], ports[1], ports[2], ports[3]
	if err := d.prepare(users); err != nil {
		return err
	}
	if err := d.launch(ctx); err != nil {
		return err
	}
	d.log.Info("started", "version", d.version, "users", len(users), "endpoints", d.Endpoints())
	return nil
}

// Pause stops Dovecot and Postfix, keeping the mail, the queue and the
// configuration, until Resume.
func (d *dovecot) Pause() error { return d.Stop() }

// Resume starts Dovecot and Postfix again on what Pause kept.
func (d *dovecot) Resume(ctx context.Context) error { return d.launch(ctx) }

// launch starts Dovecot, then Postfix once Dovecot's LMTP greets, and
// waits for every endpoint.
func (d *dovecot) launch(ctx context.Context) error {
	var err error
	dovecotConf := filepath.Join(d.opts.Dir, "dovecot.conf")
	d.dovecot, err = startProcess("dovecot", filepath.Join(d.cfg.LogDir, "dovecot-master.log"), nil,
		"dovecot", "-F", "-c", dovecotConf)
	if err != nil {
		return err
	}
	lmtp := fmt.Sprintf("127.0.0.1:%d", d.cfg.LMTPPort)
	ep := d.Endpoints()
	for _, w := range []struct{ addr, prefix string }{{ep.IMAP, "* OK"}, {ep.POP3, "+OK"}, {lmtp, "220"}} {
		if err := d.waitUp(ctx, w.addr, w.prefix); err != nil {
			return err
		}
	}
	d.postfix, err = startProcess("postfix", filepath.Join(d.cfg.LogDir, "postfix-master.log"), nil,
		"postfix", "-c", d.cfg.PostfixConf, "start-fg")
	if err != nil {
		return err
	}
	return d.waitUp(ctx, ep.SMTP, "220")
}

// waitUp waits for a greeting while both servers keep running.
func (d *dovecot) waitUp(ctx context.Context, addr, prefix string) error {
	return waitFor(ctx, dovecotReadyTimeout, addr, func() error {
		for _, p := range []*process{d.dovecot, d.postfix} {
			if p == nil {
				continue
			}
			if done, err := p.exited(); done {
				return errors.Join(fmt.Errorf("%s exited (see %s)", p.name, d.cfg.LogDir), err)
			}
		}
		return waitGreeting(ctx, addr, prefix, 2*time.Second)
	})
}

func (d *dovecot) versions() error {
	dv, err := run(30*time.Second, "", nil, "dovecot", "--version")
	if err != nil {
		return err
	}
	pv, err := run(30*time.Second, "", nil, "postconf", "-d", "-h", "mail_version")
	if err != nil {
		return err
	}
	d.version = fmt.Sprintf("Dovecot %s, Postfix %s (Debian packages)",
		strings.Fields(string(dv))[0], strings.TrimSpace(string(pv)))
	return nil
}

// prepare writes the configuration, users and directories.
func (d *dovecot) prepare(users []User) error {
	c := &d.cfg
	// Mail is stored as an unprivileged user, who must reach the
	// target's directory through its parent (the run's directory).
	for _, dir := range []string{filepath.Dir(d.opts.Dir), d.opts.Dir} {
		if err := os.Chmod(dir, 0o755); err != nil {
			return err
		}
	}
	uid, gid, err := lookupIDs(c.MailUser, c.MailGroup)
	if err != nil {
		return err
	}
	for _, dir := range []string{c.LogDir, c.MailRoot, c.PostfixConf, c.PostfixData, filepath.Join(d.opts.Dir, "run"), filepath.Join(d.opts.Dir, "state")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(c.PostfixQueue, 0o755); err != nil {
		return err
	}
	if err := os.Chown(c.MailRoot, uid, gid); err != nil {
		return err
	}
	puid, pgid, err := lookupIDs("postfix", "postfix")
	if err != nil {
		return err
	}
	if err := os.Chown(c.PostfixData, puid, pgid); err != nil {
		return err
	}
	if c.CertFile, c.KeyFile, err = d.opts.Cert.Write(filepath.Join(d.opts.Dir, "tls")); err != nil {
		return err
	}
	var passwd, mailboxes strings.Builder
	hashes := make(map[string]string)
	for _, u := range users {
		if strings.ContainsAny(u.Address+u.Password, ":\n") {
			return fmt.Errorf("user %q: ':' and newlines cannot be stored in a passwd-file", u.Address)
		}
		// One hash per distinct password: argon2id is slow on purpose.
		h, ok := hashes[u.Password]
		if !ok {
			if h, err = argon2idPHC(u.Password); err != nil {
				return err
			}
			hashes[u.Password] = h
		}
		fmt.Fprintf(&passwd, "%s:{ARGON2ID}%s::::::\n", u.Address, h)
		fmt.Fprintf(&mailboxes, "%s OK\n", u.Address)
	}
	files := []struct {
		path string
		tmpl func() ([]byte, error)
		mode os.FileMode
	}{
		{c.UsersFile, func() ([]byte, error) { return []byte(passwd.String()), nil }, 0o640},
		{c.MailboxesFile, func() ([]byte, error) { return []byte(mailboxes.String()), nil }, 0o644},
		{filepath.Join(d.opts.Dir, "dovecot.conf"), func() ([]byte, error) { return render(dovecotConfTemplate, *c) }, 0o644},
		{filepath.Join(c.PostfixConf, "main.cf"), func() ([]byte, error) { return render(postfixMainTemplate, *c) }, 0o644},
		{filepath.Join(c.PostfixConf, "master.cf"), func() ([]byte, error) { return render(postfixMasterTemplate, *c) }, 0o644},
	}
	for _, f := range files {
		b, err := f.tmpl()
		if err != nil {
			return fmt.Errorf("render %s: %w", filepath.Base(f.path), err)
		}
		if err := writeFile(f.path, b, f.mode); err != nil {
			return err
		}
	}
	// Dovecot's auth process reads the users file as its unprivileged
	// internal user.
	if _, gid, err := lookupIDs("dovecot", "dovecot"); err == nil {
		if err := os.Chown(c.UsersFile, 0, gid); err != nil {
			return err
		}
	}
	// postfix check creates the queue directories with the owners and
	// modes Postfix wants.
	if _, err := run(time.Minute, "", nil, "postfix", "-c", c.PostfixConf, "check"); err != nil {
		return fmt.Errorf("postfix check: %w", err)
	}
	return nil
}

func lookupIDs(userName, groupName string) (uid, gid int, err error) {
	u, err := user.Lookup(userName)
	if err != nil {
		return 0, 0, fmt.Errorf("user %s: %w", userName, err)
	}
	g, err := user.LookupGroup(groupName)
	if err != nil {
		return 0, 0, fmt.Errorf("group %s: %w", groupName, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(g.Gid)
	return uid, gid, errors.Join(err1, err2)
}

// argon2idPHC hashes a password in the PHC string format libsodium (and
// so Dovecot's ARGON2ID scheme) verifies, with mailnode's parameters.
func argon2idPHC(password string) (string, error) {
	const (
		t      = 2
		m      = 19 * 1024
		p      = 1
		keyLen = 32
	)
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, t, m, p, keyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, m, t, p,
		enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// Compact: a maildir (or sdbox) has nothing to compact; Dovecot's indexes
// are kept up to date as mail is read. Postfix's queue is empty once
// every message is delivered.
func (d *dovecot) Compact(context.Context) error { return nil }

// Disk measures the mail directories (messages and Dovecot's indexes)
// and Postfix's queue.
func (d *dovecot) Disk() (Disk, error) {
	return diskUsage(d.cfg.MailRoot, filepath.Join(d.cfg.PostfixQueue, "incoming"),
		filepath.Join(d.cfg.PostfixQueue, "active"), filepath.Join(d.cfg.PostfixQueue, "deferred"),
		filepath.Join(d.cfg.PostfixQueue, "maildrop"))
}

func (d *dovecot) Stop() error {
	var errs []error
	if d.postfix != nil {
		if _, err := run(time.Minute, "", nil, "postfix", "-c", d.cfg.PostfixConf, "stop"); err != nil {
			errs = append(errs, err)
		}
		errs = append(errs, d.postfix.stop(dovecotStopGrace))
		d.postfix = nil
	}
	if d.dovecot != nil {
		errs = append(errs, d.dovecot.stop(dovecotStopGrace))
		d.dovecot = nil
	}
	return errors.Join(errs...)
}
