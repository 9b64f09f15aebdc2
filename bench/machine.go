package bench

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/bench/report"
)

// describeMachine records where the run happens; dataDir is the
// directory the targets store their data in.
func describeMachine(dataDir string) report.Machine {
	host, _ := os.Hostname()
	m := report.Machine{
		Hostname: host, OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(),
		Go: runtime.Version(), DataDir: dataDir, FileSystem: fileSystem(dataDir),
	}
	m.CPUModel = procField("/proc/cpuinfo", "model name")
	if kb := procField("/proc/meminfo", "MemTotal"); kb != "" {
		if n, err := strconv.ParseInt(strings.Fields(kb)[0], 10, 64); err == nil {
			m.MemoryMB = n / 1024
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// procField returns the value of the first "key: value" line of a /proc
// file, or "".
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// gitCommit returns the commit of the working tree, with "-dirty" when it
// has uncommitted changes, or "unknown".
func gitCommit() string {
	out, err := runGit("rev-parse", "HEAD")
	if err != nil {
		return "unknown"
	}
	commit := strings.TrimSpace(out)
	if st, err := runGit("status", "--porcelain", "--untracked-files=no"); err == nil && strings.TrimSpace(st) != "" {
		commit += "-dirty"
	}
	return commit
}

func runGit(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", args...).Output()
	return string(out), err
}
