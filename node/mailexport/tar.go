package mailexport

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"time"
)

// The archive is a plain (uncompressed) tar file in GNU format, not a
// .tar.gz: an mbox file's size is known only after its last message, and
// tar wants the size in the header before the data. Rather than read
// every message twice or spool the mbox (cleartext mail) to a temporary
// file on the node, the entry's header is written with size 0 and
// rewritten in place once the mailbox is done; that needs a seekable,
// uncompressed file (Sink.WriteAt). Mail compresses little anyway (most
// of its bytes are attachments, already compressed and then
// base64-encoded), and `gzip FILE` afterwards works when it helps. GNU
// format keeps the header's length independent of the size (sizes of
// 8 GiB and more go in base-256 in the same field, where PAX would add a
// record) and takes long names through its long-name entries.

const blockSize = 512

// Sink receives the archive: its bytes in order through Write, and now
// and then a rewrite of bytes it already has (an mbox entry's header)
// through WriteAt. *os.File is one.
type Sink interface {
	Write(p []byte) (int, error)
	WriteAt(p []byte, off int64) (int, error)
}

// tarWriter writes a tar archive to a Sink, one entry at a time.
type tarWriter struct {
	s   Sink
	off int64 // bytes written so far

	// The open entry of unknown size, if any.
	open       bool
	openHeader tar.Header
	openAt     int64 // offset of its header
	openLen    int   // length of its header
	openSize   int64
}

// errEntryOpen is a programming error: an entry began before the open
// one ended.
var errEntryOpen = errors.New("tar: an entry is still open")

func (w *tarWriter) write(p []byte) error {
	n, err := w.s.Write(p)
	w.off += int64(n)
	if err != nil {
		return fmt.Errorf("write archive: %w", err)
	}
	return nil
}

// headerBytes renders a header (with a long-name entry before it when
// the name needs one). Its length does not depend on h.Size.
func headerBytes(h *tar.Header) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(h); err != nil {
		return nil, fmt.Errorf("tar header for %q: %w", h.Name, err)
	}
	// tw is not closed: the entry's data follows in the archive, not in b.
	return b.Bytes(), nil
}

func newHeader(name string, typ byte, mode int64, size int64, mtime time.Time) *tar.Header {
	return &tar.Header{
		Typeflag: typ, Name: name, Mode: mode, Size: size,
		ModTime: mtime.Truncate(time.Second), Format: tar.FormatGNU,
	}
}

// padding returns the zeros that fill an entry of size bytes to a block.
func padding(size int64) []byte {
	return make([]byte, (blockSize-size%blockSize)%blockSize)
}

// dir adds a directory entry; name ends with "/".
func (w *tarWriter) dir(name string, mtime time.Time) error {
	if w.open {
		return errEntryOpen
	}
	h, err := headerBytes(newHeader(name, tar.TypeDir, 0o700, 0, mtime))
	if err != nil {
		return err
	}
	return w.write(h)
}

// file adds a file whose content is at hand.
func (w *tarWriter) file(name string, mtime time.Time, data []byte) error {
	if w.open {
		return errEntryOpen
	}
	h, err := headerBytes(newHeader(name, tar.TypeReg, 0o600, int64(len(data)), mtime))
	if err != nil {
		return err
	}
	if err := w.write(h); err != nil {
		return err
	}
	if err := w.write(data); err != nil {
		return err
	}
	return w.write(padding(int64(len(data))))
}

// begin starts a file whose size is known only at its end.
func (w *tarWriter) begin(name string, mtime time.Time) error {
	if w.open {
		return errEntryOpen
	}
	h := newHeader(name, tar.TypeReg, 0o600, 0, mtime)
	b, err := headerBytes(h)
	if err != nil {
		return err
	}
	w.open, w.openHeader, w.openAt, w.openLen, w.openSize = true, *h, w.off, len(b), 0
	return w.write(b)
}

// add appends to the open file.
func (w *tarWriter) add(p []byte) error {
	if !w.open {
		return errors.New("tar: no open entry")
	}
	w.openSize += int64(len(p))
	return w.write(p)
}

// end finishes the open file: pads it and rewrites its header with its
// size.
func (w *tarWriter) end() error {
	if !w.open {
		return errors.New("tar: no open entry")
	}
	w.open = false
	if err := w.write(padding(w.openSize)); err != nil {
		return err
	}
	h := w.openHeader
	h.Size = w.openSize
	b, err := headerBytes(&h)
	if err != nil {
		return err
	}
	if len(b) != w.openLen {
		return fmt.Errorf("tar header for %q changed length with its size", h.Name) // GNU format's does not
	}
	if _, err := w.s.WriteAt(b, w.openAt); err != nil {
		return fmt.Errorf("write archive: %w", err)
	}
	return nil
}

// close ends the archive with two zero blocks.
func (w *tarWriter) close() error {
	if w.open {
		return errEntryOpen
	}
	return w.write(make([]byte, 2*blockSize))
}
