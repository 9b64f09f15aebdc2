package bench

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/bench/report"
)

// Outputs are the files a run wrote.
type Outputs struct {
	JSON, Markdown, Throughput, Latency string
	// Docs is the documentation page, when one was written.
	Docs string
}

// WriteResults writes the run to dir as <stamp>.json, <stamp>.md and the
// two SVG charts the Markdown embeds.
func WriteResults(run *report.Run, dir string) (Outputs, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Outputs{}, err
	}
	stamp := resultStamp(run.Started)
	o := Outputs{
		JSON:       filepath.Join(dir, stamp+".json"),
		Markdown:   filepath.Join(dir, stamp+".md"),
		Throughput: filepath.Join(dir, stamp+"-throughput.svg"),
		Latency:    filepath.Join(dir, stamp+"-latency.svg"),
	}
	if err := run.WriteJSON(o.JSON); err != nil {
		return o, err
	}
	if err := writeCharts(run, o.Throughput, o.Latency); err != nil {
		return o, err
	}
	title := fmt.Sprintf("mailbench results: %s suite", run.Suite)
	charts := report.Charts{Throughput: filepath.Base(o.Throughput), Latency: filepath.Base(o.Latency)}
	return o, writeWith(o.Markdown, func(w io.Writer) error { return run.WriteMarkdown(w, title, charts) })
}

// WriteDocs writes docs/benchmarks.md and its two charts
// (benchmarks-throughput.svg, benchmarks-latency.svg) into dir.
func WriteDocs(run *report.Run, dir, jsonName string) (string, error) {
	page := filepath.Join(dir, "benchmarks.md")
	tp, lat := filepath.Join(dir, "benchmarks-throughput.svg"), filepath.Join(dir, "benchmarks-latency.svg")
	if err := writeCharts(run, tp, lat); err != nil {
		return "", err
	}
	var body bytes.Buffer
	charts := report.Charts{Throughput: filepath.Base(tp), Latency: filepath.Base(lat)}
	if err := run.WriteMarkdown(&body, "Latest results", charts); err != nil {
		return "", err
	}
	// The page has its own title; the report's becomes a section.
	results := strings.Replace(body.String(), "# Latest results", "## Latest results", 1)
	results = strings.ReplaceAll(results, "\n## ", "\n### ")
	text := docsPreamble + results + fmt.Sprintf("\nRaw figures of this run: `bench-results/%s` on the machine that ran it (bench-results/ is not committed).\n", jsonName)
	return page, os.WriteFile(page, []byte(text), 0o644)
}

func writeCharts(run *report.Run, throughput, latency string) error {
	if err := writeWith(throughput, run.WriteThroughputSVG); err != nil {
		return err
	}
	return writeWith(latency, run.WriteLatencySVG)
}

func writeWith(path string, fn func(io.Writer) error) error {
	var b bytes.Buffer
	if err := fn(&b); err != nil {
		return fmt.Errorf("render %s: %w", filepath.Base(path), err)
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// docsPreamble explains docs/benchmarks.md; the latest standard-suite
// results follow it.
const docsPreamble = `# Benchmarks

How mailnode compares with an established mail server setup, measured by
the harness in ` + "`bench/`" + ` on one machine, in one run, with the same client
code and the same message corpus for every target. This page is generated
by ` + "`make bench`" + ` (the standard suite); do not edit it by hand.

## Reproduce

    make bench                      # builds bin/mailnode and bin/mailbench, runs the standard suite,
                                    # writes bench-results/<timestamp>.{json,md,svg} and this page
    bin/mailbench run --quick       # every target and workload briefly (about two minutes)
    bin/mailbench run --target single --workload smtp-ingest --smtp-clients 16
    bin/mailbench run --target cluster3 --workload smtp-ingest
    bin/mailbench run --target cluster3 --workload failover

` + "`--target`" + ` and ` + "`--workload`" + ` take comma-separated lists (targets: single,
cluster3, dovecot; workloads: smtp-ingest, storage, imap-mixed, pop3-drain,
smtp-ingest-sizes, failover); the other workloads need the mail smtp-ingest
delivers, so it runs first whenever one of them is selected
(smtp-ingest-sizes and failover bring their own).
` + "`bin/mailbench help`" + ` lists every option.

The dovecot target needs Dovecot and Postfix from Debian's packages
(dovecot-imapd, dovecot-pop3d, dovecot-lmtpd, postfix); the harness installs
them with apt-get when they are missing (say --install=false to forbid it).
Every server runs on 127.0.0.1 in a temporary directory and is stopped at
the end; nothing listens beyond loopback.

## Targets

- **single**: one mailnode process with the real settings (fsync on,
  encryption on): mailnode's defaults, listeners on loopback.
- **cluster3**: three mailnode processes on loopback forming one cluster,
  with the same settings and three replicas (voters) of every shard: node
  1 bootstraps it, nodes 2 and 3 (regions r1, r2, r3) join it with a
  token, and the workloads start once every shard has a leader and three
  voters. Every node serves every user: the SMTP, IMAP and POP3 clients
  spread over the three nodes, and the check after smtp-ingest reads each
  message through another node than the one that acknowledged it. A 250 means
  the message is on disk on two of the three nodes. The three processes
  share the machine's cores and its one disk.
- **dovecot**: Dovecot (IMAP, POP3, LMTP) with Postfix in front for SMTP,
  from Debian's packages, with fsync on every write.

## What is measured

- **smtp-ingest**: concurrent SMTP clients (STARTTLS, MX port, no AUTH)
  deliver the corpus to the users; acknowledged messages/s and the latency of
  each transaction up to the final 250. The clients send one command at a
  time, as Postfix's smtp-source does (--smtp-pipelining sends MAIL, RCPT
  and DATA in one write, as MTAs do where PIPELINING is offered), and
  write the message dot-stuffed in spans (not byte by byte), so
  the load generator takes little of the cores the targets share. Then
  every acknowledged message is fetched back over IMAP and compared by
  SHA-256 with what was sent; a missing, changed or duplicated message
  fails the run. "Seconds until all
  visible" shows asynchronous delivery (Postfix queues, then hands over to
  Dovecot over LMTP; mailnode stores before it answers).
- **storage**: disk bytes per delivered byte once the target is compacted,
  over what the target used with its users and no mail (cluster3 counts
  its three replicas).
- **imap-mixed**: concurrent IMAP sessions (STARTTLS, AUTHENTICATE PLAIN)
  doing what a mail client does: select, fetch a page of headers, read a
  message and mark it seen, search (unread, subject, sender, body text),
  save a message to Sent, move one to Trash, delete and expunge one, log out.
  Operations/s and latency per command. Each session sends its next
  command when the last one returns, so a faster target takes more load
  and its commands wait behind more work; a second pass, as long, paces
  the same sessions to a fixed number of commands per second in all
  (--imap-rate, below every target's capacity), each command timed from
  its scheduled start, so that the targets' latencies are compared under
  the same load.
- **smtp-ingest-sizes**: smtp-ingest again with the same clients, once
  per message size (--sizes; the standard suite sends 4 KiB, 64 KiB and
  1 MiB messages, plain text below 16 KiB and a text part with base64
  attachments from there on), each size with a corpus of its own and the
  same SHA-256 check of every acknowledged message; messages/s and MiB/s
  per size, with the ratio to dovecot and how many of the disk's fsyncs
  each message could have had at that rate.
- **pop3-drain**: concurrent POP3 sessions (STLS, AUTH PLAIN) download and
  delete whole maildrops; every download is compared with the original too.
- **failover** (cluster3 only): concurrent SMTP senders, spread over the
  nodes, send small messages, every other one to a user of one chosen
  user's shard; after a steady period the process leading that shard
  (found with ` + "`mailnode user show --json`" + ` and ` + "`mailnode cluster status --json`" + `)
  is killed with SIGKILL and the load goes on. Measured: the seconds from
  the kill to the first 250 for a message to that shard whose end of data
  was sent after the kill, and the writes refused meanwhile (4xx answers
  and connection errors; senders retry each one, through the next node
  after a connection error, as an MTA would). Then every mailbox is read
  back over IMAP through the surviving nodes, matching each message by a
  unique tag and its SHA-256: an acknowledged message lost or stored twice
  fails the run. A sender whose connection to the killed node breaks after
  the end of data cannot know whether its message was stored; it retries,
  and if the first attempt was stored the message arrives twice: that
  fails the run too, and the report says how many duplicates came from
  such lost replies. Finally the killed node is restarted and must rejoin
  the cluster. How long the failover takes never fails a run.
- **Physical limits**: the data disk's fsync rate and one core's zstd and
  XChaCha20-Poly1305 throughput, to say how close a figure is to what the
  hardware allows.

The corpus is generated from a fixed seed: sizes from 1 KiB to 5 MiB with a
long tail, plain text, HTML and messages with attachments, UTF-8 headers,
threads. Every target hashes passwords with argon2id at the same parameters
and caches verified logins. The load generator runs on the same machine as
the targets, so on a small machine it takes CPU from the server under test
alike for every target.

Each workload (each size of smtp-ingest-sizes on its own) runs on every
target in turn before the next workload starts: a machine whose speed
moves over the hour the suite takes then moves every target's figures for
a workload alike, and their ratios come from the same minutes. Between
its turns a target is stopped, its data kept, and it is started again
and warmed up (every user logged in once per node) before its next turn,
so that only the target measured runs: an idle target would take CPU and
memory from it (an idle cluster's Raft traffic takes a good part of a
core here).

`

// resultStamp names a run's files in the results directory.
func resultStamp(started time.Time) string { return started.UTC().Format("20060102-150405") }
