package limits

import (
	"os"
	"testing"
	"time"
)

func TestMeasure(t *testing.T) {
	dir := t.TempDir()
	msgs := [][]byte{[]byte("Subject: hello\r\n\r\nhello hello hello hello hello hello\r\n"), make([]byte, 64<<10)}
	l, err := Measure(dir, 50*time.Millisecond, 20*time.Millisecond, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if l.FsyncPerSec <= 0 || l.FsyncMeanMS <= 0 || l.SealMBPerSec <= 0 || l.ZstdMBPerSec <= 0 {
		t.Fatalf("non-positive rate in %+v", l)
	}
	// Zeros and repeated words compress well.
	if l.ZstdRatio < 2 {
		t.Fatalf("zstd ratio %v on very compressible input", l.ZstdRatio)
	}
	if l.PipelineMBPerSec <= 0 || l.PipelineMBPerSec > l.ZstdMBPerSec {
		t.Fatalf("pipeline %v MiB/s cannot exceed its zstd stage %v", l.PipelineMBPerSec, l.ZstdMBPerSec)
	}
	if l.PipelineMsgPerSec <= 0 {
		t.Fatalf("pipeline messages/s %v", l.PipelineMsgPerSec)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 0 {
		t.Fatalf("fsync test left %d files (%v)", len(entries), err)
	}
	if _, err := SealRate(nil, time.Millisecond); err == nil {
		t.Fatal("SealRate measured nothing without error")
	}
}
