package report

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/mailcluster/mailcluster/bench/stats"
	"github.com/mailcluster/mailcluster/bench/workload"
)

// Charts names the SVG files a Markdown report embeds (relative to the
// Markdown file); empty names leave the charts out.
type Charts struct {
	Throughput string
	Latency    string
}

// WriteMarkdown renders the run as a Markdown report.
func (r *Run) WriteMarkdown(w io.Writer, title string, charts Charts) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# %s\n\n", title)
	r.writeContext(&b)
	r.writeTargets(&b)
	r.writeSummary(&b)
	if charts.Throughput != "" || charts.Latency != "" {
		p("## Charts\n\n")
		if charts.Throughput != "" {
			p("![Throughput per target](%s)\n\n", charts.Throughput)
		}
		if charts.Latency != "" {
			p("![Latency per target](%s)\n\n", charts.Latency)
		}
	}
	r.writeIngest(&b)
	r.writeSizes(&b)
	r.writeOpTable(&b, "imap-mixed: latency per command", workload.IMAPOps, func(t *TargetRun) map[string]stats.Summary {
		if t.IMAP == nil {
			return nil
		}
		return t.IMAP.PerOp
	})
	if rate := r.Settings.IMAPRate; rate > 0 {
		r.writeOpTable(&b, fmt.Sprintf("imap-mixed paced to %s commands/s: latency per command", formatNum(rate)), workload.IMAPOps, func(t *TargetRun) map[string]stats.Summary {
			if t.IMAPPaced == nil {
				return nil
			}
			return t.IMAPPaced.PerOp
		})
	}
	r.writeOpTable(&b, "pop3-drain: latency per command", workload.POP3Ops, func(t *TargetRun) map[string]stats.Summary {
		if t.POP3 == nil {
			return nil
		}
		return t.POP3.PerOp
	})
	r.writeStorage(&b)
	r.writeFailover(&b)
	r.writeProfiles(&b)
	r.writeProblems(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *Run) writeContext(b *strings.Builder) {
	m := r.Machine
	fmt.Fprintf(b, "Run of %s (%s suite), commit `%s`.\n\n", r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Suite, r.GitCommit)
	machine := []string{m.Hostname, fmt.Sprintf("%d CPUs", m.CPUs)}
	if m.CPUModel != "" {
		machine = append(machine, m.CPUModel)
	}
	if m.MemoryMB > 0 {
		machine = append(machine, fmt.Sprintf("%.1f GiB RAM", float64(m.MemoryMB)/1024))
	}
	machine = append(machine, fmt.Sprintf("%s/%s", m.OS, m.Arch))
	if m.Kernel != "" {
		machine = append(machine, "kernel "+m.Kernel)
	}
	if m.FileSystem != "" {
		machine = append(machine, "data on "+m.FileSystem)
	}
	machine = append(machine, m.Go)
	fmt.Fprintf(b, "- Machine: %s. Targets and the load generator share it.\n", strings.Join(machine, ", "))
	s := r.Settings
	parts := []string{fmt.Sprintf("seed %d, %d users, up to %d messages", s.Seed, s.Users, s.Messages),
		fmt.Sprintf("smtp-ingest %d clients%s (at most %s s)", s.SMTPClients, pipelined(s.SMTPPipelining), formatNum(s.IngestSec))}
	if len(s.Workloads) == 0 || slices.Contains(s.Workloads, "imap-mixed") {
		im := fmt.Sprintf("imap-mixed %d sessions for %s s", s.IMAPSessions, formatNum(s.IMAPSec))
		if s.IMAPRate > 0 {
			im += fmt.Sprintf(", then as long again paced to %s commands/s", formatNum(s.IMAPRate))
		}
		parts = append(parts, im)
	}
	if len(s.Workloads) == 0 || slices.Contains(s.Workloads, "pop3-drain") {
		parts = append(parts, fmt.Sprintf("pop3-drain %d clients (at most %s s)", s.POP3Clients, formatNum(s.POP3Sec)))
	}
	if len(s.SizeSeries) > 0 {
		steps := make([]string, len(s.SizeSeries))
		for i, st := range s.SizeSeries {
			steps[i] = fmt.Sprintf("%s × %d", SizeLabel(st.Bytes), st.Messages)
		}
		parts = append(parts, fmt.Sprintf("smtp-ingest-sizes up to %s messages (at most %s s each)", strings.Join(steps, ", "), formatNum(s.SizeSec)))
	}
	if slices.Contains(s.Workloads, "failover") {
		parts = append(parts, fmt.Sprintf("failover %d senders, %s s before and %s s after the kill",
			s.FailoverSenders, formatNum(s.FailoverBeforeSec), formatNum(s.FailoverAfterSec)))
	}
	fmt.Fprintf(b, "- Settings: %s; workloads: %s.\n", strings.Join(parts, "; "), strings.Join(s.Workloads, ", "))
	c := r.Corpus
	if c.Messages > 0 {
		fmt.Fprintf(b, "- Corpus: %d messages, %.1f MiB; sizes median %s, p90 %s, p99 %s, max %s; %d plain text, %d HTML alternative, %d with attachments; %d replies in threads.\n",
			c.Messages, float64(c.TotalBytes)/(1<<20), kib(c.P50Bytes), kib(c.P90Bytes), kib(c.P99Bytes), kib(c.MaxBytes),
			c.Kinds["text"], c.Kinds["alternative"], c.Kinds["attachment"], c.Replies)
	}
	if l := r.Limits; l != nil {
		fmt.Fprintf(b, "- Physical limits of this machine: %s fsyncs/s on the data disk (4 KiB append + fdatasync, %s ms each); "+
			"one core seals %s MiB/s (XChaCha20-Poly1305) and compresses %s MiB/s (zstd, ratio %s on the corpus); "+
			"compress-then-seal: %s MiB/s = %s corpus messages/s per core.\n",
			formatNum(l.FsyncPerSec), formatNum(l.FsyncMeanMS), formatNum(l.SealMBPerSec), formatNum(l.ZstdMBPerSec),
			formatNum(l.ZstdRatio), formatNum(l.PipelineMBPerSec), formatNum(l.PipelineMsgPerSec))
		for _, t := range r.Targets {
			if t.Ingest == nil || t.Preload || l.FsyncPerSec == 0 {
				continue
			}
			fmt.Fprintf(b, "  - %s acknowledged %s messages/s, which leaves %s of the disk's fsyncs per message",
				t.Info.Name, formatNum(t.Ingest.MessagesPerSec), formatNum(l.FsyncPerSec/max(t.Ingest.MessagesPerSec, 1e-9)))
			if IsOurs(t.Info.Name) && l.PipelineMsgPerSec > 0 {
				fmt.Fprintf(b, ", and %s%% of one core's compress-and-seal capacity", formatNum(100*t.Ingest.MessagesPerSec/l.PipelineMsgPerSec))
			}
			b.WriteString(".\n")
		}
	}
	b.WriteString("\n")
}

func kib(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
}

func (r *Run) writeTargets(b *strings.Builder) {
	b.WriteString("## Targets and their durability\n\n| target | software | acknowledgement and durability | storage | passwords | client connections |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, t := range r.Targets {
		i := t.Info
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s |\n", i.Name, cell(i.Software), cell(i.Durability), cell(i.Storage), cell(i.Auth), cell(i.TLS))
	}
	b.WriteString("\n")
	for _, t := range r.Targets {
		if len(t.Info.Settings) == 0 {
			continue
		}
		keys := make([]string, 0, len(t.Info.Settings))
		for k := range t.Info.Settings {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s: %s", k, t.Info.Settings[k])
		}
		fmt.Fprintf(b, "- %s settings: %s.\n", t.Info.Name, strings.Join(parts, "; "))
	}
	b.WriteString("\n")
}

// cell makes text safe inside a table cell.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s)
}

func (r *Run) writeSummary(b *strings.Builder) {
	pairs := r.pairs()
	b.WriteString("## Summary\n\n")
	if len(pairs) > 0 {
		b.WriteString("Ratios divide our figure by the peer's, both measured in this run on this machine; " +
			"\"better\" or \"worse\" says which way the ratio favours us for that figure.\n\n")
	}
	b.WriteString("| workload | figure |")
	for _, t := range r.Targets {
		fmt.Fprintf(b, " %s |", t.Info.Name)
	}
	for _, pr := range pairs {
		fmt.Fprintf(b, " %s / %s |", pr[0], pr[1])
	}
	b.WriteString("\n| --- | --- |")
	b.WriteString(strings.Repeat(" ---: |", len(r.Targets)+len(pairs)))
	b.WriteString("\n")
	for _, m := range r.metrics() {
		var row strings.Builder
		any := false
		fmt.Fprintf(&row, "| %s | %s |", m.workload, m.name)
		for i := range r.Targets {
			if v, ok := m.get(&r.Targets[i]); ok {
				fmt.Fprintf(&row, " %s |", m.format(v))
				any = true
			} else {
				row.WriteString(" - |")
			}
		}
		for _, pr := range pairs {
			ov, ook := m.get(r.target(pr[0]))
			pv, pok := m.get(r.target(pr[1]))
			if q, ok := Ratio(ov, pv, ook, pok); ok {
				fmt.Fprintf(&row, " %s |", formatRatio(q, m.higher))
			} else {
				row.WriteString(" - |")
			}
		}
		if any {
			b.WriteString(row.String())
			b.WriteString("\n")
		}
	}
	b.WriteString("\n")
}

func (r *Run) writeIngest(b *strings.Builder) {
	var rows []string
	for _, t := range r.Targets {
		if t.Ingest == nil {
			continue
		}
		in := t.Ingest
		label := t.Info.Name
		if t.Preload {
			label += " (preload only)"
		}
		check := "not checked"
		if c := in.Check; c != nil {
			if c.OK() {
				check = fmt.Sprintf("all %d acknowledged messages fetched back, byte-identical (SHA-256)", c.Expected)
				if c.ReadElsewhere > 0 {
					check += fmt.Sprintf("; %d of them through another node than the one that acknowledged them", c.ReadElsewhere)
				}
			} else {
				check = fmt.Sprintf("**FAILED**: %d expected, %d matched, %d missing, %d different, %d duplicated",
					c.Expected, c.Matched, c.Missing, c.Mismatched, c.Duplicates)
			}
			if c.Unacknowledged > 0 {
				check += fmt.Sprintf("; %d unacknowledged messages stored too", c.Unacknowledged)
			}
		}
		tx := in.Ops["transaction"]
		conn := in.Ops["connect"]
		rows = append(rows, fmt.Sprintf("| %s | %d | %d | %d | %s | %s | %s | %s | %s | %s |", label, in.Clients, in.Acked, in.Failed,
			formatNum(in.ElapsedSec), formatNum(tx.P50MS), formatNum(tx.P90MS), formatNum(tx.P99MS), formatNum(conn.P50MS), check))
	}
	if len(rows) == 0 {
		return
	}
	b.WriteString("## smtp-ingest\n\nEach transaction is MAIL FROM, RCPT TO and DATA up to the final reply; clients reconnect every 10 messages " +
		"(connect = TCP, greeting, EHLO and STARTTLS). After sending, every acknowledged message is fetched back over IMAP and compared by SHA-256 " +
		"with what was sent (after the trace headers the server prepends); a difference fails the run.\n\n")
	b.WriteString("| target | clients | acknowledged | failed | seconds | p50 ms | p90 ms | p99 ms | connect p50 ms | correctness |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	b.WriteString(strings.Join(rows, "\n"))
	b.WriteString("\n\n")
}

// writeSizes renders smtp-ingest-sizes: per message size and target,
// messages/s and MiB/s, the ratio of each of ours to each peer, latency
// and the correctness check.
func (r *Run) writeSizes(b *strings.Builder) {
	var sizes []int
	for _, t := range r.Targets {
		for _, sz := range t.Sizes {
			if !slices.Contains(sizes, sz.Bytes) {
				sizes = append(sizes, sz.Bytes)
			}
		}
	}
	if len(sizes) == 0 {
		return
	}
	slices.Sort(sizes)
	b.WriteString("## smtp-ingest-sizes\n\nsmtp-ingest again, once per message size, with messages of exactly that size " +
		"(plain text below 16 KiB, a text part and base64 attachments from there on), sent by the same clients to the same users; " +
		"every acknowledged message is fetched back and compared by SHA-256 as in smtp-ingest. " +
		"The ratio divides our messages/s by the peer's. The disk's fsyncs per message is the disk's fsyncs/s (physical limits) " +
		"divided by the messages/s: how many fsyncs each message could have had at this rate.\n\n")
	b.WriteString("| size | target | acknowledged | failed | messages/s | MiB/s | ratio | disk's fsyncs per message | p50 ms | p99 ms | correctness |\n" +
		"| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |\n")
	for _, n := range sizes {
		get := sizeFigure(n, func(in *workload.IngestResult) float64 { return in.MessagesPerSec })
		for i := range r.Targets {
			t := &r.Targets[i]
			var in *workload.IngestResult
			for _, sz := range t.Sizes {
				if sz.Bytes == n {
					in = sz.Ingest
				}
			}
			if in == nil {
				continue
			}
			var ratios []string
			if IsOurs(t.Info.Name) {
				for _, pr := range r.pairs() {
					if pr[0] != t.Info.Name {
						continue
					}
					ov, ook := get(t)
					pv, pok := get(r.target(pr[1]))
					if q, ok := Ratio(ov, pv, ook, pok); ok {
						ratios = append(ratios, fmt.Sprintf("%s vs %s", formatRatio(q, true), pr[1]))
					}
				}
			}
			check := "not checked"
			if c := in.Check; c != nil {
				if c.OK() {
					check = fmt.Sprintf("all %d fetched back, byte-identical", c.Expected)
				} else {
					check = fmt.Sprintf("**FAILED**: %d expected, %d missing, %d different, %d duplicated", c.Expected, c.Missing, c.Mismatched, c.Duplicates)
				}
			}
			budget := "-"
			if l := r.Limits; l != nil && l.FsyncPerSec > 0 && in.MessagesPerSec > 0 {
				budget = formatNum(l.FsyncPerSec / in.MessagesPerSec)
			}
			tx := in.Ops["transaction"]
			fmt.Fprintf(b, "| %s | %s | %d | %d | %s | %s | %s | %s | %s | %s | %s |\n", SizeLabel(n), t.Info.Name, in.Acked, in.Failed,
				formatNum(in.MessagesPerSec), formatNum(in.MBPerSec), cell(strings.Join(ratios, "; ")), budget,
				formatNum(tx.P50MS), formatNum(tx.P99MS), check)
		}
	}
	b.WriteString("\n")
}

func (r *Run) writeOpTable(b *strings.Builder, title string, ops []string, get func(*TargetRun) map[string]stats.Summary) {
	var present []*TargetRun
	for i := range r.Targets {
		if get(&r.Targets[i]) != nil {
			present = append(present, &r.Targets[i])
		}
	}
	if len(present) == 0 {
		return
	}
	fmt.Fprintf(b, "## %s\n\n| command |", title)
	for _, t := range present {
		fmt.Fprintf(b, " %s count | %s p50 ms | %s p99 ms |", t.Info.Name, t.Info.Name, t.Info.Name)
	}
	pairs := r.pairs()
	for _, pr := range pairs {
		fmt.Fprintf(b, " p50 %s / %s |", pr[0], pr[1])
	}
	b.WriteString("\n| --- |")
	b.WriteString(strings.Repeat(" ---: |", 3*len(present)+len(pairs)))
	b.WriteString("\n")
	for _, op := range ops {
		seen := false
		for _, t := range present {
			if s, ok := get(t)[op]; ok && s.Count+s.Errors > 0 {
				seen = true
			}
		}
		if !seen {
			continue
		}
		fmt.Fprintf(b, "| %s |", op)
		for _, t := range present {
			s, ok := get(t)[op]
			if !ok {
				b.WriteString(" - | - | - |")
				continue
			}
			count := fmt.Sprint(s.Count)
			if s.Errors > 0 {
				count += fmt.Sprintf(" (%d failed)", s.Errors)
			}
			fmt.Fprintf(b, " %s | %s | %s |", count, formatNum(s.P50MS), formatNum(s.P99MS))
		}
		for _, pr := range pairs {
			o, ook := opSummary(r.target(pr[0]), get, op)
			p, pok := opSummary(r.target(pr[1]), get, op)
			if q, ok := Ratio(o.P50MS, p.P50MS, ook, pok); ok {
				fmt.Fprintf(b, " %s |", formatRatio(q, false))
			} else {
				b.WriteString(" - |")
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
}

func opSummary(t *TargetRun, get func(*TargetRun) map[string]stats.Summary, op string) (stats.Summary, bool) {
	if t == nil {
		return stats.Summary{}, false
	}
	m := get(t)
	s, ok := m[op]
	return s, ok && s.Count > 0
}

func (r *Run) writeStorage(b *strings.Builder) {
	var rows []string
	for _, t := range r.Targets {
		s := t.Storage
		if s == nil {
			continue
		}
		rows = append(rows, fmt.Sprintf("| %s | %d | %s | %s | %s | %d | %s | %s | %s |", t.Info.Name, s.DeliveredMessages,
			mib(s.DeliveredBytes), mib(s.Baseline.Allocated), mib(s.After.Allocated), s.After.Files, mib(s.After.Apparent),
			formatNum(s.BytesPerByte), formatNum(s.CompactSec)))
	}
	if len(rows) == 0 {
		return
	}
	b.WriteString("## storage\n\nDisk space of the stored mail once the target is compacted (mailnode: `mailnode compact` online, then offline; " +
		"Dovecot's maildir and sdbox need none), minus what the target used with its users and no mail, per byte of mail acknowledged. Sizes are allocated disk blocks; the apparent size of sparse files is shown for reference. " +
		"The offline step restarts mailnode, which empties its cache of verified logins; since every target is started again and each user logged in once before each of its turns, the workloads after this one find it as they find the others.\n\n")
	b.WriteString("| target | messages | delivered | disk before | disk after | files after | apparent size after | disk bytes per delivered byte | compaction s |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	b.WriteString(strings.Join(rows, "\n"))
	b.WriteString("\n\n")
}

// writeFailover writes the failover section: the figures of each target
// that ran it, and why the others did not.
func (r *Run) writeFailover(b *strings.Builder) {
	var rows, skipped, refusals []string
	for _, t := range r.Targets {
		for _, s := range t.Skipped {
			if s.Workload == "failover" {
				skipped = append(skipped, fmt.Sprintf("- %s: not run: %s.", t.Info.Name, s.Reason))
			}
		}
		f := t.Failover
		if f == nil {
			continue
		}
		failover := "never (no write accepted)"
		if f.Recovered {
			failover = formatNum(f.FailoverSec)
		}
		leaders := f.Killed + " → " + f.NewLeader
		if f.NewLeader == "" {
			leaders = f.Killed + " → ?"
		}
		rejoin := "did not rejoin"
		if f.Rejoined {
			rejoin = formatNum(f.RejoinSec)
		}
		users := fmt.Sprintf("%d users", f.ShardUsers)
		if f.ShardUsers == 1 {
			users = "1 user"
		}
		rows = append(rows, fmt.Sprintf("| %s | %d | %d (%s) | %s | %s | %d (%d / %d) | %d | %d | %d | %d | %d | %s | %s |",
			t.Info.Name, f.Senders, f.Shard, users, leaders, failover, f.Refused, f.Refused4xx, f.RefusedConn,
			f.Sent, f.Acked, f.Found, f.Lost, f.Duplicates, rejoin, failoverCheck(f)))
		for _, s := range f.Refusals {
			refusals = append(refusals, fmt.Sprintf("- %s: %s", t.Info.Name, cell(s)))
		}
	}
	if len(rows) == 0 && len(skipped) == 0 {
		return
	}
	b.WriteString("## failover\n\nUnder steady SMTP load (senders spread over the nodes, every other message to a user of one chosen shard), " +
		"the process leading that shard is killed with SIGKILL. The failover time runs from the kill to the first 250 for a message to a user " +
		"of that shard whose end of data was sent after the kill (so the new leader committed it). Refused writes are the attempts answered " +
		"with a 4xx code or ended by a connection error after the kill; senders retry each one (after 50 ms, and through the next node after " +
		"a connection error), as an MTA would. Then every mailbox is read back over IMAP through the surviving nodes: every acknowledged message " +
		"must be there exactly once (a lost or duplicated message fails the run). Finally the killed node is restarted and must rejoin.\n\n")
	if len(rows) > 0 {
		b.WriteString("| target | senders | shard | killed → new leader | failover s | refused (4xx / connection) | sent | acknowledged | found | lost | duplicates | rejoin s | correctness |\n" +
			"| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
		b.WriteString(strings.Join(rows, "\n"))
		b.WriteString("\n\n")
	}
	if len(skipped) > 0 {
		b.WriteString(strings.Join(skipped, "\n"))
		b.WriteString("\n\n")
	}
	if len(refusals) > 0 {
		b.WriteString("Refusals the senders saw (first distinct ones, with counts):\n\n")
		b.WriteString(strings.Join(refusals, "\n"))
		b.WriteString("\n\n")
	}
}

// failoverCheck describes the read-back after a failover.
func failoverCheck(f *workload.FailoverResult) string {
	c := f.Check
	if c == nil {
		return "**FAILED**: not read back"
	}
	var s string
	if f.OK() {
		s = fmt.Sprintf("every one of the %d acknowledged messages found exactly once, byte-identical (SHA-256), through the surviving nodes", c.Expected)
	} else {
		s = fmt.Sprintf("**FAILED**: %d acknowledged, %d lost, %d duplicated, %d different", c.Expected, f.Lost, f.Duplicates, c.Mismatched)
	}
	if f.UnknownOutcome > 0 {
		s += fmt.Sprintf("; %d messages had an attempt whose connection broke after the end of data (outcome unknown to the sender, who retried)", f.UnknownOutcome)
	}
	if f.DuplicatesLostReply > 0 {
		s += fmt.Sprintf("; %d of the duplicates are such messages: stored, but the 250 was lost with the killed node", f.DuplicatesLostReply)
	}
	if f.GaveUp > 0 || f.Rejected > 0 {
		s += fmt.Sprintf("; %d given up still refused, %d refused for good (5xx)", f.GaveUp, f.Rejected)
	}
	return s
}

func mib(n int64) string {
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func (r *Run) writeProblems(b *strings.Builder) {
	if len(r.Skipped) > 0 {
		b.WriteString("## Targets not run\n\n")
		for _, s := range r.Skipped {
			fmt.Fprintf(b, "- %s: %s\n", s.Target, s.Reason)
		}
		b.WriteString("\n")
	}
	var errs []string
	for _, t := range r.Targets {
		for _, e := range t.Errors {
			errs = append(errs, fmt.Sprintf("%s: %s", t.Info.Name, e))
		}
		add := func(workload string, list []string) {
			for _, e := range list {
				errs = append(errs, fmt.Sprintf("%s %s: %s", t.Info.Name, workload, e))
			}
		}
		if t.Ingest != nil {
			add("smtp-ingest", t.Ingest.Errors)
			if t.Ingest.Check != nil {
				add("smtp-ingest check", t.Ingest.Check.Problems)
			}
		}
		if t.IMAP != nil {
			add("imap-mixed", t.IMAP.Errors)
		}
		if t.POP3 != nil {
			add("pop3-drain", t.POP3.Errors)
		}
		if t.Failover != nil {
			add("failover", t.Failover.Errors)
			if t.Failover.Check != nil {
				add("failover check", t.Failover.Check.Problems)
			}
		}
	}
	if len(errs) > 0 {
		b.WriteString("## Errors seen\n\n")
		for _, e := range errs {
			fmt.Fprintf(b, "- %s\n", cell(e))
		}
		b.WriteString("\n")
	}
	if len(r.Failures) > 0 {
		b.WriteString("## RUN FAILED\n\n")
		for _, f := range r.Failures {
			fmt.Fprintf(b, "- %s\n", cell(f))
		}
		b.WriteString("\n")
	}
}

// writeProfiles lists, per target and workload, the functions that took
// the most CPU time, with the profile file to open in `go tool pprof`.
func (r *Run) writeProfiles(b *strings.Builder) {
	var some bool
	for _, t := range r.Targets {
		some = some || len(t.Profiles) > 0
	}
	if !some {
		return
	}
	b.WriteString("## Where the CPU time goes\n\nCPU profiles of the target's processes while each workload ran " +
		"(all nodes merged): first by stage, each sample counted for the innermost function on its stack " +
		"that belongs to a stage (so compression called by sealing is compression, and a socket write of a " +
		"TLS record is sockets), then the functions that spent the most CPU time themselves (flat) " +
		"and including what they call (cum). Open a file with `go tool pprof -http=: FILE`.\n\n")
	for _, t := range r.Targets {
		for _, p := range t.Profiles {
			fmt.Fprintf(b, "### %s, %s (`%s`, %s CPU-seconds)\n\n", t.Info.Name, p.Workload, p.File, formatNum(p.CPUSec))
			if len(p.Stages) > 0 {
				b.WriteString("| stage | share |\n| --- | --- |\n")
				for _, s := range p.Stages {
					fmt.Fprintf(b, "| %s | %.1f%% |\n", s.Name, 100*s.Share)
				}
				b.WriteString("\n")
			}
			b.WriteString("| function | flat | cum |\n| --- | --- | --- |\n")
			for _, f := range p.Top {
				fmt.Fprintf(b, "| `%s` | %.1f%% | %.1f%% |\n", f.Name, 100*f.Flat, 100*f.Cum)
			}
			b.WriteString("\n")
		}
	}
}

// pipelined is what the settings line says of SMTP clients that
// pipeline.
func pipelined(on bool) string {
	if on {
		return ", pipelining MAIL, RCPT and DATA"
	}
	return ""
}
