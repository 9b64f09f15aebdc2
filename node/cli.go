package node

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/node/admin"
)

// Exit codes of the mailnode command.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// adminTimeout bounds one admin command.
const adminTimeout = 2 * time.Minute

// CLI is the mailnode command: its version and standard streams. The
// binary's main builds one and calls Run; tests run it in-process.
type CLI struct {
	Version string
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
}

// errUsage marks a command-line mistake; Run prints usage for it.
var errUsage = errors.New("usage")

const usageText = `mailnode: a storage-first mail server (SMTP, IMAP, POP3 over a Raft store)

Usage:
  mailnode serve --data DIR [--config FILE] [--hostname NAME] [--node-id ID]
                 [--log-level LEVEL] [--log-format json|text] [--bind HOST]
                 [--backup-target REGION=URL ...]
                 [--region NAME] [--cluster-listen HOST:PORT] [--cluster-advertise HOST:PORT]
                 [--join HOST:PORT --token TOKEN] [--bootstrap-token TOKEN]
                 [--raft-profile wan|lan]
  mailnode cluster token  --data DIR [--ttl DURATION]
  mailnode cluster status --data DIR [--json]
  mailnode cluster remove --data DIR NODE
  mailnode domain add  --data DIR [--key-mode user|domain|shared] [--region NAME] DOMAIN
  mailnode domain list --data DIR
  mailnode domain del  --data DIR DOMAIN
  mailnode domain dns  [--data DIR] [--json] [--config FILE] [--host NAME] DOMAIN  (every DNS record to publish)
  mailnode dkim show|rotate ...                      (DKIM keys; see DKIM below)
  mailnode user add    --data DIR ADDRESS      (password from standard input)
  mailnode user passwd --data DIR ADDRESS      (password from standard input)
  mailnode user delete --data DIR [--json] ADDRESS   (erases the user, destroying its key; "del" too)
  mailnode user list   --data DIR [--domain DOMAIN]
  mailnode user show   --data DIR [--json] ADDRESS   (domain, mail shard, created, MFA, quota and usage)
  mailnode user quota  --data DIR [--messages] ADDRESS LIMIT|none|default  (storage quota: "2GiB";
                                               --messages: a number of messages; none = unlimited,
                                               default = limits.default_quota / default_message_quota)
  mailnode user export --data DIR ADDRESS --to FILE [--format mbox|maildir]  (see Exporting below)
  mailnode user app-password add|list|revoke ...     (see App passwords and MFA below)
  mailnode user mfa enable|confirm|disable ...
  mailnode user sessions --data DIR [--kill] [--json] ADDRESS  (recent logins, open sessions; see below)
  mailnode domain mfa  --data DIR DOMAIN require|optional
  mailnode domain catch-all --data DIR DOMAIN TARGET|off
  mailnode alias add|del|list ...                    (see Aliases and catch-all below)
  mailnode status      --data DIR [--json]
  mailnode compact     --data DIR
  mailnode scrub       start|status --data DIR [--json]  (read every stored message now; see below)
  mailnode backup      now|list|verify|drill|restore ...  (see Backups below)
  mailnode import      imap|maildir|mbox ... --to USER[/MAILBOX]  (see Importing mail below)
  mailnode config check [--config FILE]        (names the line of every problem)
  mailnode security    blocked|unblock ...     (login lockouts, see below)
  mailnode queue       list|show|retry|hold|release|delete ...  (outbound queue, see below)
  mailnode audit       [--since DUR] [--json]  (administrative actions, see below)
  mailnode admin token add|list|revoke ...     (HTTPS admin API and web page, see below)
  mailnode version

serve initializes DIR on its first run: as the first node of a new
cluster, or, with --join and a token from "mailnode cluster token" on any
member, as a new member of that cluster. The other commands talk to the
node serving DIR through DIR/admin.sock; instead of --data they accept
--config FILE and use its data_dir, and without either they use
$MAILNODE_DATA (set in the container image). A password is read without
echo, twice, from a terminal, or as one line from a pipe. Tokens may also
come from $MAILNODE_TOKEN and $MAILNODE_BOOTSTRAP_TOKEN.

compact snapshots every shard of the running node (truncating the Raft
logs); with no node serving DIR it rewrites the shard files to shrink
them.

scrub start reads every piece of every message in the node's replicas
now, at scrub.rate, and opens it under its user's key; what does not
open is served and put back from another replica's copy (the node also
does this every scrub.every, weekly by default). scrub status says
whether one runs and what the last one found in each replica.
` + accountUsage + dkimUsage + sessionsUsage + aliasUsage + sentCopyUsage + queueUsage + backupUsage + importUsage + exportUsage + configCheckUsage + securityUsage + auditUsage + adminTokenUsage

// Run executes one command line (without the program name) and returns
// the process exit code. ctx is cancelled to stop a serving node.
func (c CLI) Run(ctx context.Context, args []string) int {
	err := c.run(ctx, args)
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(c.Stdout, usageText)
		return ExitOK
	case errors.Is(err, errUsage):
		fmt.Fprintf(c.Stderr, "mailnode: %v\n\n%s", err, usageText)
		return ExitUsage
	default:
		fmt.Fprintf(c.Stderr, "mailnode: %v\n", err)
		return ExitError
	}
}

func (c CLI) run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: no command given", errUsage)
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return c.serve(ctx, rest)
	case "domain", "user", "cluster", "alias":
		if len(rest) == 0 {
			return fmt.Errorf("%w: %s needs a subcommand", errUsage, cmd)
		}
		if cmd == "user" && rest[0] == "export" {
			return c.exportCommand(ctx, rest[1:])
		}
		if name, args, ok := aliasCommandName(cmd, rest); ok {
			return c.aliasCommand(ctx, name, args)
		}
		if cmd == "domain" && rest[0] == "dns" {
			return c.domainDNS(ctx, rest[1:])
		}
		if cmd == "domain" && rest[0] == "sent-copy" {
			return c.sentCopyCommand(ctx, rest[1:])
		}
		if cmd == "user" && rest[0] == "sessions" {
			return c.sessionsCommand(ctx, rest[1:])
		}
		if name, args, ok, err := accountCommandName(cmd, rest); ok {
			if err != nil {
				return err
			}
			return c.accountCommand(ctx, name, args)
		}
		return c.adminCommand(ctx, cmd+" "+rest[0], rest[1:])
	case "status":
		return c.adminCommand(ctx, cmd, rest)
	case "backup":
		return c.backupCommand(ctx, rest)
	case "import":
		return c.importCommand(ctx, rest)
	case "config":
		return c.configCommand(rest)
	case "security":
		return c.securityCommand(ctx, rest)
	case "dkim":
		return c.dkimCommand(ctx, rest)
	case "queue":
		return c.queueCommand(ctx, rest)
	case "audit":
		return c.auditCommand(ctx, rest)
	case "admin":
		return c.adminTokenCommand(ctx, rest)
	case "compact":
		return c.compact(ctx, rest)
	case "scrub":
		return c.scrubCommand(ctx, rest)
	case "version", "--version":
		fmt.Fprintf(c.Stdout, "mailnode %s (%s %s/%s)\n", c.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	case "help", "-h", "--help":
		return flag.ErrHelp
	default:
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
}

// dataDirEnv names the data directory when no flag does (the container
// image sets it, so "docker compose exec n1 mailnode ..." needs no --data).
const dataDirEnv = "MAILNODE_DATA"

// dataDirArg returns the data directory an admin command names with
// --data, or through --config's data_dir, or $MAILNODE_DATA.
func dataDirArg(command, data, configFile string) (string, error) {
	if data == "" && configFile != "" {
		cfg, err := loadConfigFile(configFile)
		if err != nil {
			return "", err
		}
		data = cfg.DataDir
	}
	if data == "" {
		data = os.Getenv(dataDirEnv)
	}
	if data == "" {
		return "", fmt.Errorf("%w: %s needs --data DIR (or --config FILE)", errUsage, command)
	}
	return data, nil
}

// parseInterleaved parses flags that may come before, between or after
// the positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// loadConfigFile reads and parses a config file.
func loadConfigFile(path string) (Config, error) {
	b, _, err := readSmallFile(path, maxConfigSize)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, b)
}

func (c CLI) serve(ctx context.Context, args []string) error {
	fs := newFlagSet("serve")
	data := fs.String("data", "", "data directory")
	configFile := fs.String("config", "", "TOML config file")
	fs.String("hostname", "", "public host name")
	fs.String("node-id", "", "node id")
	fs.String("log-level", "", "log level")
	fs.String("log-format", "", "log format")
	fs.String("bind", "", "host to bind every listener to")
	var backupTargets repeatedFlag
	fs.Var(&backupTargets, "backup-target", "REGION=URL of a backup target (repeatable)")
	fs.String("region", "", "the node's region")
	fs.String("cluster-listen", "", "cluster port to listen on")
	fs.String("cluster-advertise", "", "cluster address other nodes dial")
	fs.String("join", "", "a member's cluster address to join (first start)")
	fs.String("token", "", "join token")
	fs.String("bootstrap-token", "", "a join token this node accepts again and again")
	fs.String("raft-profile", "", "wan or lan")
	fs.Int("replicas", 0, "replicas per mail shard")
	fs.Duration("dead-after", 0, "how long a node may be unreachable before its replicas are rebuilt elsewhere")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: serve takes no arguments, got %q", errUsage, pos[0])
	}
	cfg := Default()
	if *configFile != "" {
		if cfg, err = loadConfigFile(*configFile); err != nil {
			return err
		}
	}
	if cfg.DataDir == "" {
		cfg.DataDir = os.Getenv(dataDirEnv)
	}
	cfg.Cluster.Token = os.Getenv("MAILNODE_TOKEN")
	cfg.Cluster.BootstrapToken = os.Getenv("MAILNODE_BOOTSTRAP_TOKEN")
	if err := readTokenFiles(&cfg.Cluster); err != nil {
		return err
	}
	var flagErr error
	fs.Visit(func(f *flag.Flag) {
		v := f.Value.String()
		switch f.Name {
		case "data":
			cfg.DataDir = *data
		case "hostname":
			cfg.Hostname = v
		case "node-id":
			cfg.NodeID = v
		case "log-level":
			cfg.Log.Level = v
		case "log-format":
			cfg.Log.Format = v
		case "bind":
			flagErr = errors.Join(flagErr, cfg.Listen.BindHost(v))
			if _, port, err := net.SplitHostPort(cfg.Cluster.Listen); err == nil {
				cfg.Cluster.Listen = net.JoinHostPort(v, port)
			}
		case "region":
			cfg.Cluster.Region = v
		case "cluster-listen":
			cfg.Cluster.Listen = v
		case "cluster-advertise":
			cfg.Cluster.Advertise = v
		case "join":
			cfg.Cluster.Join = v
		case "token":
			cfg.Cluster.Token = v
		case "bootstrap-token":
			cfg.Cluster.BootstrapToken = v
		case "raft-profile":
			cfg.Cluster.RaftProfile = v
		case "replicas":
			cfg.Cluster.Replicas, _ = strconv.Atoi(v)
		case "dead-after":
			cfg.Cluster.DeadAfter, _ = time.ParseDuration(v)
		}
	})
	if flagErr != nil {
		return fmt.Errorf("--bind: %w", flagErr)
	}
	if len(backupTargets) > 0 {
		if cfg.Backup.Targets, err = mergeBackupTargets(cfg.Backup.Targets, backupTargets); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid config:\n  %s", strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	log, err := NewLogger(cfg, c.Stderr)
	if err != nil {
		return err
	}
	n, err := New(cfg, Options{Logger: log, Version: c.Version})
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	var failure error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "component", "node", "reason", context.Cause(ctx).Error())
	case failure = <-n.Failed():
		log.Error("shutting down after a listener failed", "component", "node", "err", failure)
	}
	if err := n.Close(); err != nil {
		return errors.Join(failure, err)
	}
	return failure
}

// readTokenFiles reads the join and bootstrap tokens named in the config.
func readTokenFiles(c *ClusterConfig) error {
	for _, f := range []struct {
		path string
		dst  *string
	}{{c.TokenFile, &c.Token}, {c.BootstrapTokenFile, &c.BootstrapToken}} {
		if f.path == "" {
			continue
		}
		b, _, err := readSmallFile(f.path, 4096)
		if err != nil {
			return fmt.Errorf("read token: %w", err)
		}
		*f.dst = strings.TrimSpace(string(b))
	}
	return nil
}

// adminCommandArgs returns how many arguments an admin command takes,
// and false for an unknown command.
func adminCommandArgs(name string) (int, bool) {
	switch name {
	case "domain add", "domain del", "user add", "user passwd", "user del", "user delete", "user show", "cluster remove":
		return 1, true
	case "domain list", "user list", "status", "cluster token", "cluster status":
		return 0, true
	case "user quota":
		return 2, true
	}
	return 0, false
}

// adminCommand runs one command against the node serving a data
// directory.
func (c CLI) adminCommand(ctx context.Context, name string, args []string) error {
	fs := newFlagSet(name)
	data := fs.String("data", "", "data directory of the node")
	configFile := fs.String("config", "", "config file naming the data directory")
	var keyMode, domain, region *string
	var asJSON, messages *bool
	var ttl *time.Duration
	switch name {
	case "domain add":
		keyMode = fs.String("key-mode", string(directory.KeyModeUser), "user, domain or shared")
		region = fs.String("region", "", "pin the domain's mail to a region")
	case "user list":
		domain = fs.String("domain", "", "list only this domain's users")
	case "user quota":
		messages = fs.Bool("messages", false, "limit the number of messages instead of their bytes")
	case "status", "cluster status", "user show", "user del", "user delete":
		asJSON = fs.Bool("json", false, "print as JSON")
	case "cluster token":
		ttl = fs.Duration("ttl", cluster.DefaultTokenTTL, "how long the token stays valid")
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	dir, err := dataDirArg(name, *data, *configFile)
	if err != nil {
		return err
	}
	want, known := adminCommandArgs(name)
	if !known {
		return fmt.Errorf("%w: unknown command %q", errUsage, name)
	}
	if len(pos) != want {
		return fmt.Errorf("%w: %s takes %d argument(s), got %d", errUsage, name, want, len(pos))
	}
	var arg string
	if want >= 1 {
		arg = pos[0]
	}
	var quota directory.QuotaSetting
	if name == "user quota" {
		if quota, err = parseQuota(pos[1], *messages); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}

	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	client := admin.NewClient(dir)
	defer client.Close()

	switch name {
	case "domain add":
		if err := client.AddDomain(ctx, arg, directory.KeyMode(*keyMode), *region); err != nil {
			return err
		}
		if *region != "" {
			fmt.Fprintf(c.Stdout, "domain %s added (key mode %s, region %s)\n", arg, *keyMode, *region)
		} else {
			fmt.Fprintf(c.Stdout, "domain %s added (key mode %s)\n", arg, *keyMode)
		}
	case "cluster token":
		tok, err := client.IssueToken(ctx, *ttl)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.Stdout, tok)
	case "cluster remove":
		if err := client.RemoveNode(ctx, arg); err != nil {
			return err
		}
		fmt.Fprintf(c.Stdout, "node %s removed; its replicas are rebuilt on the other nodes\n", arg)
	case "cluster status":
		s, err := client.ClusterStatus(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(c.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(s)
		}
		return printClusterStatus(c.Stdout, s)
	case "domain del":
		if err := client.DeleteDomain(ctx, arg); err != nil {
			return err
		}
		fmt.Fprintf(c.Stdout, "domain %s deleted\n", arg)
	case "domain list":
		doms, err := client.Domains(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DOMAIN\tKEY MODE\tREGION\tUSERS\tMFA")
		for _, d := range doms {
			region := d.Region
			if region == "" {
				region = "-"
			}
			mfa := admin.MFAOptional
			if d.RequireMFA {
				mfa = "required"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", d.Name, d.KeyMode, region, d.Users, mfa)
		}
		return tw.Flush()
	case "user add", "user passwd":
		// Fail before asking for a password nobody would receive.
		if _, err := client.Status(ctx); err != nil {
			return err
		}
		password, err := readPassword(c.Stdin, c.Stderr)
		if err != nil {
			return err
		}
		if name == "user add" {
			err = client.AddUser(ctx, arg, password)
		} else {
			err = client.SetPassword(ctx, arg, password)
		}
		if err != nil {
			return err
		}
		if name == "user add" {
			fmt.Fprintf(c.Stdout, "user %s added\n", arg)
		} else {
			fmt.Fprintf(c.Stdout, "password of %s changed\n", arg)
		}
	case "user del", "user delete":
		res, err := client.EraseUser(ctx, arg)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(c.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(res)
		}
		printDeleteResult(c.Stdout, arg, res)
	case "user show":
		u, err := client.User(ctx, arg)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(c.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(u)
		}
		mfa := u.MFA
		if u.DomainRequiresMFA {
			mfa += " (required by the domain: only app passwords log in)"
		}
		fmt.Fprintf(c.Stdout, "address  %s\ndomain   %s\nshard    %d\ncreated  %s\nmfa      %s\napp passwords  %d\nquota    %s\n",
			u.Address, u.Domain, u.Shard, u.Created.Format(time.RFC3339), mfa, u.AppPasswords, describeQuota(u.Quota, false, false))
		if u.QuotaDefault {
			fmt.Fprintln(c.Stdout, "         (the cluster's default, limits.default_quota)")
		}
		fmt.Fprintf(c.Stdout, "message quota  %s\n", describeQuota(u.MessageQuota, false, true))
		if u.MessageQuotaDefault {
			fmt.Fprintln(c.Stdout, "         (the cluster's default, limits.default_message_quota)")
		}
		if u.Usage != nil && u.Messages != nil {
			fmt.Fprintf(c.Stdout, "usage    %s in %d messages\n", formatBytes(*u.Usage), *u.Messages)
		}
	case "user quota":
		if err := client.SetQuota(ctx, arg, quota); err != nil {
			return err
		}
		fmt.Fprintf(c.Stdout, "%s quota of %s: %s\n", quota.Resource, arg, describeQuota(quota.Limit, quota.Default, *messages))
	case "user list":
		users, err := client.Users(ctx, *domain)
		if err != nil {
			return err
		}
		for _, u := range users {
			fmt.Fprintln(c.Stdout, u)
		}
	case "status":
		s, err := client.Status(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(c.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(s)
		}
		c.printStatus(s)
	default:
		return fmt.Errorf("%w: unknown command %q", errUsage, name)
	}
	return nil
}

func (c CLI) printStatus(s admin.Status) {
	tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
	ready := "yes"
	if !s.Ready {
		ready = "no: " + s.ReadyError
	}
	fmt.Fprintf(tw, "node\t%s\n", s.NodeID)
	fmt.Fprintf(tw, "hostname\t%s\n", s.Hostname)
	fmt.Fprintf(tw, "version\t%s\n", s.Version)
	fmt.Fprintf(tw, "started\t%s\n", s.Started.Format(time.RFC3339))
	fmt.Fprintf(tw, "ready\t%s\n", ready)
	for _, name := range ListenerNames() {
		if a, ok := s.Listeners[name]; ok {
			fmt.Fprintf(tw, "listen %s\t%s\n", name, a)
		}
	}
	tw.Flush()
}

// Stdio returns a CLI on the process's standard streams.
func Stdio(version string) CLI {
	return CLI{Version: version, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
}

// clockColumn shows how far a node's clock is ahead of the answering
// node's, and to within what: "+0.002s ±0.001s", "-" when unknown.
func clockColumn(n cluster.NodeStatus) string {
	if n.ClockOffset == nil {
		return "-"
	}
	unc := 0.0
	if n.ClockUncertainty != nil {
		unc = *n.ClockUncertainty
	}
	return fmt.Sprintf("%+.3fs ±%.3fs", *n.ClockOffset, unc)
}

// printClusterStatus prints nodes and shards as tables.
func printClusterStatus(w io.Writer, s cluster.Status) error {
	fmt.Fprintf(w, "cluster %s (as node %s sees it)\n\n", s.ClusterID, s.Node)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tREGION\tADDRESS\tHEALTH\tVERSION\tCOMMANDS\tLAST SEEN\tCLOCK")
	for _, n := range s.Nodes {
		seen := "-"
		if !n.LastSeen.IsZero() {
			seen = n.LastSeen.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", n.ID, n.Region, n.Address, n.Health, n.Version, n.Commands, seen, clockColumn(n))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tHOME\tLEADER\tTERM\tCOMMIT\tREPLICAS (node:state:applied:lag)")
	for _, sh := range s.Shards {
		home, leader := sh.Home, sh.Leader
		if sh.Shard == 0 {
			home = "(meta)"
		}
		term, commit := strconv.FormatUint(sh.Term, 10), strconv.FormatUint(sh.CommitIndex, 10)
		if leader == "" {
			leader, term, commit = "NONE", "-", "-" // an election or a transfer under way
		}
		var reps []string
		for _, r := range sh.Replicas {
			role := r.State
			if !r.Voter {
				role += ",non-voter"
			}
			if !r.Placed {
				role += ",leaving"
			}
			if r.Stopped {
				role += ",stopped"
			}
			if r.Stuck {
				role += ",disk-stuck"
			}
			if r.Skipped > 0 {
				role += fmt.Sprintf(",skipped=%d", r.Skipped)
			}
			if r.DamagedReads > 0 {
				role += fmt.Sprintf(",damaged-log=%d", r.DamagedReads)
			}
			if r.Repaired > 0 {
				role += fmt.Sprintf(",repaired=%d", r.Repaired)
			}
			reps = append(reps, fmt.Sprintf("%s:%s:%d:%d", r.Node, role, r.AppliedIndex, r.Lag))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", sh.Shard, home, leader, term, commit, strings.Join(reps, " "))
	}
	return tw.Flush()
}
