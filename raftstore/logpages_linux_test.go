package raftstore

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/hashicorp/raft"
	"golang.org/x/sys/unix"
)

// residentPages counts the pages of the file at path that are in the
// page cache.
func residentPages(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() == 0 {
		return 0
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// The log keeps the pages of its two newest segments in the page cache
// and lets go of the older ones' as it moves on.
func TestRaftLogDropsOldSegmentPages(t *testing.T) {
	dir := t.TempDir()
	// Where the page cache cannot be advised (tmpfs holds its files
	// there), there is nothing to test.
	probe := filepath.Join(dir, "probe")
	if err := os.WriteFile(probe, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if f, err := os.OpenFile(probe, os.O_RDWR, 0); err == nil {
		f.Sync()
		f.Close()
	}
	if err := dropCachedPages(probe); err != nil || residentPages(t, probe) > 0 {
		t.Skipf("the page cache of %s cannot be dropped (err %v)", dir, err)
	}

	legacy := legacyReplica(t, dir, 1, 0) // no legacy entries
	w, err := openRaftLog(dir, legacy, quietLog)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	data := make([]byte, 1<<20)
	last := 5 * logSegmentSize / uint64(len(data))
	for i := uint64(1); i <= last; i++ {
		if err := w.StoreLogs([]*raft.Log{{Index: i, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
			t.Fatal(err)
		}
	}
	// raft-wal creates the next segment in the background once one
	// fills, and that drops the pages of the one two behind it; an append
	// waits for such a rotation, so after this small one the segments
	// stay as they are while they are looked at.
	if err := w.StoreLogs([]*raft.Log{{Index: last + 1, Term: 1, Type: raft.LogCommand, Data: []byte("settle")}}); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(dir, walDir))
	if err != nil {
		t.Fatal(err)
	}
	var segments []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".wal") {
			segments = append(segments, filepath.Join(dir, walDir, e.Name()))
		}
	}
	slices.Sort(segments)
	if len(segments) < 4 {
		t.Fatalf("%d segments after 5 segments' worth of entries: %v", len(segments), segments)
	}
	for i, s := range segments {
		resident := residentPages(t, s)
		newest := i >= len(segments)-keepCachedSegments
		if newest && resident == 0 {
			t.Errorf("segment %s, one of the %d newest, has no page cached", filepath.Base(s), keepCachedSegments)
		}
		if !newest && resident > 0 {
			t.Errorf("segment %s, older than the %d newest, still has %d pages cached", filepath.Base(s), keepCachedSegments, resident)
		}
	}
}
