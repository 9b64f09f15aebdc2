package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/bench/targets"
)

// Inspectable is a target whose processes can be looked into when a run
// on it fails: their logs, and while they run, their goroutines. A
// failure in CI is otherwise one line (a check failed, a workload
// aborted) and the nodes' logs go with the run's temporary directory.
type Inspectable interface {
	Processes() []targets.Process
}

const (
	// diagLogTail is how much of the end of a log is read for its
	// warnings and errors.
	diagLogTail = 4 << 20
	// diagLogLines is how many warning and error lines are shown per
	// process.
	diagLogLines = 25
	// diagGroups bounds the goroutine groups shown per process.
	diagGroups = 20
	// diagFrames bounds the frames shown per goroutine group.
	diagFrames = 14
	// maxDumpBytes bounds one downloaded goroutine dump.
	maxDumpBytes = 64 << 20
)

// diagnose writes to w what each process of a failed target logged at
// warning level and above and, for those that still run, which
// goroutines wait and on what; the full dumps are kept beside the logs
// (with --keep).
func diagnose(ctx context.Context, w io.Writer, target string, t Inspectable) {
	for _, p := range t.Processes() {
		fmt.Fprintf(w, "--- %s, %s (log %s)\n", target, p.Name, p.Log)
		tail, err := readTail(p.Log, diagLogTail)
		if err != nil {
			fmt.Fprintf(w, "log: %v\n", err)
		} else {
			writeLogFindings(w, tail)
		}
		if p.Debug == "" {
			continue
		}
		dump, err := fetchGoroutines(ctx, p.Debug)
		if err != nil {
			fmt.Fprintf(w, "goroutines: %v\n", err)
			continue
		}
		name := strings.TrimSuffix(p.Log, ".log") + "-goroutines.txt"
		if err := os.WriteFile(name, dump, 0o644); err == nil {
			fmt.Fprintf(w, "goroutines (all of them in %s):\n", name)
		}
		writeGoroutines(w, summariseGoroutines(dump))
	}
}

// readTail returns up to the last max bytes of a file, from the start
// of a line.
func readTail(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := info.Size() - max
	if off < 0 {
		off = 0
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, info.Size()-off))
	if err != nil {
		return nil, err
	}
	if off > 0 {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return b, nil
}

// writeLogFindings writes a log's last warning and error lines (the
// nodes log JSON) and summarises what is not JSON: a panic, or the
// goroutine dump of a process that was sent SIGQUIT.
func writeLogFindings(w io.Writer, log []byte) {
	var findings []string
	var raw bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) > 0 && line[0] == '{' {
			var rec struct {
				Level string `json:"level"`
			}
			if json.Unmarshal(line, &rec) == nil {
				if rec.Level == "WARN" || rec.Level == "ERROR" {
					findings = append(findings, string(line))
				}
				continue
			}
		}
		raw.Write(line)
		raw.WriteByte('\n')
	}
	if len(findings) > diagLogLines {
		fmt.Fprintf(w, "(%d earlier warnings and errors left out)\n", len(findings)-diagLogLines)
		findings = findings[len(findings)-diagLogLines:]
	}
	for _, f := range findings {
		fmt.Fprintln(w, f)
	}
	if raw.Len() == 0 {
		return
	}
	groups := summariseGoroutines(raw.Bytes())
	// Whatever precedes the first goroutine (a panic's message, "SIGQUIT:
	// quit") is shown as it is.
	head := raw.Bytes()
	if i := bytes.Index(head, []byte("\ngoroutine ")); i >= 0 {
		head = head[:i+1]
	}
	if lines := strings.Split(strings.TrimSpace(string(head)), "\n"); len(lines) > 0 && lines[0] != "" {
		if len(lines) > diagLogLines {
			lines = lines[len(lines)-diagLogLines:]
		}
		fmt.Fprintln(w, "output that is not a log record:")
		for _, l := range lines {
			fmt.Fprintln(w, "  "+l)
		}
	}
	if len(groups) > 0 {
		fmt.Fprintln(w, "goroutines dumped in the log:")
		writeGoroutines(w, groups)
	}
}

// fetchGoroutines takes every goroutine's stack from a running node.
func fetchGoroutines(ctx context.Context, base string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/debug/pprof/goroutine?debug=2", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", req.URL, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxDumpBytes))
}

// goroutineGroup is the goroutines of a dump that share a state and a
// stack.
type goroutineGroup struct {
	state   string   // "semacquire", "select", ...
	minutes int      // the longest wait among them
	count   int      // how many
	frames  []string // "function (file.go:line)", innermost first
}

var (
	goroutineHeader = regexp.MustCompile(`^goroutine \d+ \[([^\]]*)\]:$`)
	waitMinutes     = regexp.MustCompile(`(\d+) minutes`)
)

// summariseGoroutines groups the goroutines of a Go stack dump (SIGQUIT
// or /debug/pprof/goroutine?debug=2) by state and stack, the longest
// waits and the largest groups first.
func summariseGoroutines(dump []byte) []goroutineGroup {
	byKey := map[string]*goroutineGroup{}
	var cur *goroutineGroup
	var pendingFunc string
	flush := func() {
		if cur == nil {
			return
		}
		key := cur.state + "\x00" + strings.Join(cur.frames, "\x00")
		if g, ok := byKey[key]; ok {
			g.count++
			g.minutes = max(g.minutes, cur.minutes)
		} else {
			cur.count = 1
			byKey[key] = cur
		}
		cur = nil
	}
	for _, line := range strings.Split(string(dump), "\n") {
		if m := goroutineHeader.FindStringSubmatch(line); m != nil {
			flush()
			state, _, _ := strings.Cut(m[1], ",")
			cur = &goroutineGroup{state: state}
			if mm := waitMinutes.FindStringSubmatch(m[1]); mm != nil {
				cur.minutes, _ = strconv.Atoi(mm[1])
			}
			pendingFunc = ""
			continue
		}
		if cur == nil {
			continue
		}
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, "\t"):
			if pendingFunc == "" || len(cur.frames) >= diagFrames {
				continue
			}
			file := strings.TrimSpace(line)
			if i := strings.LastIndex(file, " +0x"); i >= 0 {
				file = file[:i]
			}
			if i := strings.LastIndex(file, "/"); i >= 0 {
				file = file[i+1:]
			}
			cur.frames = append(cur.frames, pendingFunc+" ("+file+")")
			pendingFunc = ""
		default:
			fn := line
			if i := strings.Index(fn, " in goroutine "); i >= 0 {
				fn = fn[:i]
			}
			// A frame's arguments are the last parenthesised part (they
			// hold no parentheses); a method's receiver comes before.
			if i := strings.LastIndexByte(fn, '('); i > 0 && strings.HasSuffix(fn, ")") {
				fn = fn[:i]
			}
			pendingFunc = fn
		}
	}
	flush()
	out := make([]goroutineGroup, 0, len(byKey))
	for _, g := range byKey {
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.minutes != b.minutes {
			return a.minutes > b.minutes
		}
		if a.count != b.count {
			return a.count > b.count
		}
		return strings.Join(a.frames, "") < strings.Join(b.frames, "")
	})
	return out
}

// writeGoroutines writes the first groups of a summary.
func writeGoroutines(w io.Writer, groups []goroutineGroup) {
	total := 0
	for _, g := range groups {
		total += g.count
	}
	fmt.Fprintf(w, "%d goroutines in %d groups\n", total, len(groups))
	for i, g := range groups {
		if i == diagGroups {
			fmt.Fprintf(w, "(%d more groups left out)\n", len(groups)-i)
			break
		}
		wait := ""
		if g.minutes > 0 {
			wait = fmt.Sprintf(", up to %d minutes", g.minutes)
		}
		fmt.Fprintf(w, "%d × [%s%s]\n", g.count, g.state, wait)
		for _, f := range g.frames {
			fmt.Fprintln(w, "    "+f)
		}
	}
}
