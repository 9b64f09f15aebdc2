package imap

import (
	"bufio"
	"compress/flate"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
)

// COMPRESS=DEFLATE (RFC 4978), in the front: after "tag OK", every byte
// both ways is raw DEFLATE (RFC 1951). The reader reads the inflated
// stream, so the front's line and literal bounds apply to what the client
// means, not to what it sent: a few kilobytes that inflate to gigabytes
// of one line meet the same BAD and BYE as the plain line would, and the
// inflater itself holds only its 32 KiB window. The deflater is flushed
// (a sync flush) wherever the plain writer was, after each burst of
// output, so a client never waits for bytes held in the compressor.
//
// The inflater is our own (inflate.go): it hands on each byte as soon as
// it is decoded and reads no bit past the ones it needs, so a client
// that ends its bursts with zlib's Z_PARTIAL_FLUSH (mbsync) is answered;
// neither the standard library's nor klauspost/compress's inflater does
// both.

// compressLevel is the deflate level of the server's output: zlib's
// default, the balance Dovecot and Cyrus also choose.
const compressLevel = flate.DefaultCompression

// isCompressed reports whether COMPRESS is on.
func (f *frontConn) isCompressed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.compressed
}

// flushLocked writes out what bw holds and, with COMPRESS on, flushes the
// deflater so the client can inflate all of it. The caller holds wmu.
func (f *frontConn) flushLocked() error {
	if err := f.bw.Flush(); err != nil {
		return err
	}
	if f.zw != nil {
		return f.zw.Flush()
	}
	return nil
}

// compress runs COMPRESS. It is valid once logged in, and once.
func (f *frontConn) compress(cmd *imapwire.Command) bool {
	start := time.Now()
	f.mu.Lock()
	authed, active := f.authenticated, f.compressed
	f.mu.Unlock()
	refuse := func(text string) bool {
		f.observe("COMPRESS", false, start)
		return f.refuse(&imapwire.Error{Tag: cmd.Tag, Text: text})
	}
	switch {
	case len(cmd.Args) != 1 || cmd.Args[0].Kind != imapwire.KindAtom:
		return refuse("COMPRESS takes one mechanism name")
	case !authed:
		return refuse("COMPRESS is valid only after login")
	case active:
		f.observe("COMPRESS", false, start)
		return f.writeLine(cmd.Tag+" NO [COMPRESSIONACTIVE] DEFLATE is already active") == nil
	case !strings.EqualFold(string(cmd.Args[0].Value), "DEFLATE"):
		return refuse("Unknown compression mechanism (DEFLATE is offered)")
	}
	f.wmu.Lock()
	f.bw.WriteString(cmd.Tag + " OK DEFLATE active\r\n")
	err := f.flushLocked()
	if err == nil {
		// The level is valid, so NewWriter cannot fail.
		zw, zerr := flate.NewWriter(connWriter{f}, compressLevel)
		if zerr != nil {
			err = zerr
		} else {
			f.zw = zw
			f.bw.Reset(zw)
			f.mu.Lock()
			f.compressed = true
			f.mu.Unlock()
		}
	}
	f.wmu.Unlock()
	f.observe("COMPRESS", err == nil, start)
	if err != nil {
		return false
	}
	// What the client sent after the command, still in the plain
	// buffer, is the start of the compressed stream: the inflater reads
	// through that buffer.
	f.rd.Reset(bufio.NewReaderSize(newInflater(f.rd.Buffered()), frontReadBuffer))
	return true
}
