// Package limits measures what the machine allows, to put the
// benchmark's figures in context: how many fsyncs per second the data
// disk completes (every acknowledged message costs at least one on every
// target), and how fast one core compresses (zstd) and seals
// (XChaCha20-Poly1305) the corpus (what mailnode does to every message).
//
// Invariants: every measurement is bounded in time and in count; files are
// written only in the directory given and removed afterwards.
package limits

import (
	"crypto/rand"
	"fmt"
	"os"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/chacha20poly1305"
)

// Limits are the machine's physical limits.
type Limits struct {
	// FsyncPerSec is 4 KiB appends, each followed by fdatasync, per
	// second, on the disk that holds the targets' data.
	FsyncPerSec float64 `json:"fsync_per_sec"`
	// FsyncMeanMS is the mean latency of one append and fdatasync.
	FsyncMeanMS float64 `json:"fsync_mean_ms"`
	// SealMBPerSec is XChaCha20-Poly1305 sealing on one core, MiB/s.
	SealMBPerSec float64 `json:"seal_mib_per_sec"`
	// ZstdMBPerSec is zstd (default level) compression on one core, MiB/s
	// of input.
	ZstdMBPerSec float64 `json:"zstd_mib_per_sec"`
	// ZstdRatio is input bytes per compressed byte over the corpus.
	ZstdRatio float64 `json:"zstd_ratio"`
	// PipelineMBPerSec is compress-then-seal on one core, MiB/s.
	PipelineMBPerSec float64 `json:"pipeline_mib_per_sec"`
	// PipelineMsgPerSec is PipelineMBPerSec in messages of the corpus's
	// mean size.
	PipelineMsgPerSec float64 `json:"pipeline_msg_per_sec"`
}

// Bounds of one measurement.
const (
	maxFsyncs     = 200_000
	maxCryptoRuns = 50
)

// Measure runs every measurement: fsync in dir for fsyncTime, crypto over
// the messages for about cryptoTime each.
func Measure(dir string, fsyncTime, cryptoTime time.Duration, messages [][]byte) (Limits, error) {
	var l Limits
	n, mean, err := FsyncRate(dir, fsyncTime)
	if err != nil {
		return l, err
	}
	l.FsyncPerSec, l.FsyncMeanMS = n, mean
	if l.SealMBPerSec, err = SealRate(messages, cryptoTime); err != nil {
		return l, err
	}
	if l.ZstdMBPerSec, l.ZstdRatio, err = ZstdRate(messages, cryptoTime); err != nil {
		return l, err
	}
	if l.SealMBPerSec > 0 && l.ZstdMBPerSec > 0 {
		// Sealing runs on the compressed bytes.
		l.PipelineMBPerSec = 1 / (1/l.ZstdMBPerSec + 1/(l.SealMBPerSec*l.ZstdRatio))
	}
	var total int
	for _, m := range messages {
		total += len(m)
	}
	if len(messages) > 0 && total > 0 {
		l.PipelineMsgPerSec = l.PipelineMBPerSec * (1 << 20) / (float64(total) / float64(len(messages)))
	}
	return l, nil
}

// FsyncRate appends 4 KiB blocks to a new file in dir, each followed by
// fdatasync, for d (at most maxFsyncs times), and returns the rate per
// second and the mean latency in milliseconds.
func FsyncRate(dir string, d time.Duration) (perSec, meanMS float64, err error) {
	f, err := os.CreateTemp(dir, "mailbench-fsync-*")
	if err != nil {
		return 0, 0, fmt.Errorf("fsync test: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, 4096)
	if _, err := rand.Read(block); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	n := 0
	for n < maxFsyncs && time.Since(start) < d {
		if _, err := f.Write(block); err != nil {
			return 0, 0, fmt.Errorf("fsync test write: %w", err)
		}
		if err := datasync(f); err != nil {
			return 0, 0, fmt.Errorf("fsync test sync: %w", err)
		}
		n++
	}
	elapsed := time.Since(start)
	return float64(n) / elapsed.Seconds(), elapsed.Seconds() * 1000 / float64(n), nil
}

// SealRate seals every message with XChaCha20-Poly1305 (a fresh random
// nonce each), repeatedly for about d, on one goroutine, and returns MiB/s.
func SealRate(messages [][]byte, d time.Duration) (float64, error) {
	key := make([]byte, chacha20poly1305.KeySize)
	if _, err := rand.Read(key); err != nil {
		return 0, err
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return 0, err
	}
	nonce := make([]byte, aead.NonceSize())
	var dst []byte
	return rate(messages, d, func(m []byte) error {
		if _, err := rand.Read(nonce); err != nil {
			return err
		}
		dst = aead.Seal(dst[:0], nonce, m, []byte("mailbench"))
		return nil
	})
}

// ZstdRate compresses every message with zstd at the default level (what
// mailnode's envelope uses), on one goroutine, for about d, and returns
// MiB/s of input and the compression ratio.
func ZstdRate(messages [][]byte, d time.Duration) (mbPerSec, ratio float64, err error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return 0, 0, err
	}
	defer enc.Close()
	var in, out int64
	var dst []byte
	mb, err := rate(messages, d, func(m []byte) error {
		dst = enc.EncodeAll(m, dst[:0])
		in += int64(len(m))
		out += int64(len(dst))
		return nil
	})
	if err != nil || out == 0 {
		return mb, 0, err
	}
	return mb, float64(in) / float64(out), nil
}

// rate runs fn over every message, passes at a time, until d has passed
// (at least one pass, at most maxCryptoRuns), and returns MiB/s.
func rate(messages [][]byte, d time.Duration, fn func([]byte) error) (float64, error) {
	if len(messages) == 0 {
		return 0, fmt.Errorf("no messages to measure")
	}
	var bytes int64
	start := time.Now()
	for pass := 0; pass < maxCryptoRuns && (pass == 0 || time.Since(start) < d); pass++ {
		for _, m := range messages {
			if err := fn(m); err != nil {
				return 0, err
			}
			bytes += int64(len(m))
			if pass > 0 && time.Since(start) >= d {
				break
			}
		}
	}
	return float64(bytes) / (1 << 20) / time.Since(start).Seconds(), nil
}
