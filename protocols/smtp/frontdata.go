package smtp

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols"
)

// The front hands go-smtp a message that the client sends with DATA as
// BDAT chunks (RFC 3030), which go-smtp already takes: go-smtp's DATA
// reader (v0.25.1) reads the content one byte at a time through a
// dot-unstuffing state machine and a line-length counter, which was a
// fifth of the node's CPU time for 1 MiB messages, while a BDAT chunk is
// copied whole, with the line counter off. The front takes the dots out
// itself, a run of bytes at a time.
//
// To the client it is DATA as RFC 5321 defines it:
//   - DATA reaches go-smtp as "BDAT 0", which go-smtp answers exactly as
//     it answers DATA: "250 Continue" when MAIL and at least one RCPT were
//     accepted, then the front says 354, and otherwise its refusal (the
//     same "502 5.5.1 Missing RCPT TO command.").
//   - The content up to CRLF "." CRLF goes to go-smtp in chunks of at
//     most convertChunk bytes, the last one as "BDAT n LAST"; go-smtp's
//     "250 Continue" to the others is not passed on, and its reply to the
//     last is the reply to DATA.
//   - When go-smtp refuses a chunk (the size limit, or the session failed
//     early), the front reads the rest of the content and then answers
//     with that refusal: the client stays in step. go-smtp is handed a
//     RSET for it, which ends the transaction as a failed DATA does.
//   - go-smtp does not count line lengths in chunks; the session checks
//     the lines of a message that came as DATA itself (longestLine).
//
// Lines end at CRLF only, as RFC 5321 section 2.3.8 defines them; a bare
// CR or LF is content. A line's leading "." is taken out (section
// 4.5.2), and a line of just "." ends the content.
//
// A DATA sent while the client's own BDAT transfer is open goes to go-smtp
// unchanged, to be refused as it would be.

// convertChunk is the most content one BDAT chunk made from DATA carries.
const convertChunk = 64 << 10

// dataReady is go-smtp's reply that the front turns into DATA's 354;
// the text is go-smtp's own for DATA.
const dataReady = "354 Go ahead. End your data with <CR><LF>.<CR><LF>\r\n"

// divert is what the front does with the next reply of go-smtp, which
// answers a command the front made up.
type divert int

const (
	divertNone  divert = iota
	divertOpen         // the reply to "BDAT 0" in place of DATA
	divertChunk        // the reply to a chunk that is not the last
	divertLast         // the reply to the last chunk: DATA's reply
)

// dataConversion is the state of one DATA transfer handed on as BDAT.
type dataConversion struct {
	state    int    // dot-stuffing state: the data* constants
	chunkMax int    // the most content of one chunk
	end      bool   // the end-of-data line was read
	last     bool   // the LAST chunk was handed to go-smtp
	chunk    []byte // buffer of the chunk being handed on
}

// scan takes client content from src, as far as the end-of-data line
// (included) at most, and appends what it stands for to dst. It returns
// dst and the number of bytes of src it consumed.
func (d *dataConversion) scan(dst, src []byte) ([]byte, int) {
	i := 0
	for i < len(src) && !d.end {
		switch d.state {
		case dataInLine:
			j := bytes.IndexByte(src[i:], '\r')
			if j < 0 {
				j = len(src) - i
			} else {
				j++
				d.state = dataCR
			}
			dst = append(dst, src[i:i+j]...)
			i += j
		case dataCR:
			switch src[i] {
			case '\n':
				dst = append(dst, '\n')
				d.state = dataLineStart
			case '\r':
				dst = append(dst, '\r')
			default:
				d.state = dataInLine
				continue
			}
			i++
		case dataLineStart:
			switch src[i] {
			case '.':
				d.state = dataDot
				i++
			default:
				d.state = dataInLine
			}
		case dataDot:
			if src[i] == '\r' {
				d.state = dataDotCR
				i++
				continue
			}
			// A leading dot of a line with more on it is taken out.
			d.state = dataInLine
		case dataDotCR:
			if src[i] == '\n' {
				d.end = true
				i++
				continue
			}
			// ".\r" and more: the dot goes, the CR stays.
			dst = append(dst, '\r')
			d.state = dataCR
		}
	}
	return dst, i
}

// readConverted hands go-smtp the next command of a DATA transfer made
// into BDAT: the next chunk's command line, alone (its bytes follow in
// the next reads, from f.chunkOut), or, when the transfer failed, a RSET
// whose reply is the failure.
func (f *frontConn) readConverted(in *bufio.Reader, p []byte) (int, error) {
	d := &f.conv
	if d.chunk == nil {
		d.chunk = make([]byte, 0, d.chunkMax+1)
	}
	chunk := d.chunk[:0]
	for !d.end && len(chunk) < d.chunkMax && !f.transferFailed() {
		if err := f.awaitContent(in); err != nil {
			return 0, err
		}
		buf, _ := in.Peek(in.Buffered())
		if room := d.chunkMax - len(chunk); len(buf) > room {
			// Unstuffing does not grow the content (but for a CR held
			// back after a leading dot), so the chunk stays near its size.
			buf = buf[:room]
		}
		var n int
		chunk, n = d.scan(chunk, buf)
		_, _ = in.Discard(n)
	}
	if f.transferFailed() {
		return f.endFailedTransfer(in, p)
	}
	d.chunk = chunk
	line := "BDAT " + strconv.Itoa(len(chunk))
	f.mu.Lock()
	if d.end {
		line += " LAST"
		d.last = true
		f.divert = divertLast
	} else {
		f.divert = divertChunk
	}
	f.mu.Unlock()
	f.chunkOut = chunk
	return f.handOut(p, []byte(line+"\r\n")), nil
}

// awaitContent waits until client content is buffered. Like go-smtp's
// DATA reader under the session's deadlines, the client may pause for
// Config.ReadTimeout between reads, not per chunk: a slow but steady
// client is not cut off while a chunk fills. (The session bounds the
// whole transfer by Config.DataTimeout.)
func (f *frontConn) awaitContent(in *bufio.Reader) error {
	if in.Buffered() == 0 && f.srv.cfg.ReadTimeout > 0 {
		if err := f.conn().SetReadDeadline(time.Now().Add(f.srv.cfg.ReadTimeout)); err != nil {
			return err
		}
	}
	_, err := in.Peek(1)
	return err
}

// transferFailed reports whether go-smtp refused a chunk of the current
// transfer (its reply is waiting in f.failedReply).
func (f *frontConn) transferFailed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failedReply != nil
}

// endFailedTransfer reads the client's content up to its end, then hands
// go-smtp a RSET whose reply becomes the refusal of the DATA.
func (f *frontConn) endFailedTransfer(in *bufio.Reader, p []byte) (int, error) {
	d := &f.conv
	for !d.end {
		if err := f.awaitContent(in); err != nil {
			return 0, err
		}
		buf, _ := in.Peek(in.Buffered())
		_, n := d.scan(nil, buf)
		_, _ = in.Discard(n)
	}
	f.mu.Lock()
	f.override = string(bytes.TrimSuffix(f.failedReply, []byte("\r\n")))
	f.failedReply = nil
	f.mu.Unlock()
	f.mode = frontCommand
	f.conv = dataConversion{chunk: d.chunk}
	return f.handOut(p, []byte("RSET\r\n")), nil
}

// handOut copies out to p and keeps what does not fit for the next reads.
func (f *frontConn) handOut(p, out []byte) int {
	n := copy(p, out)
	if n < len(out) {
		f.pending = append(f.pending[:0], out[n:]...)
	}
	return n
}

// divertReply handles a reply line of go-smtp's to a command the front
// made up (f.divert says which); it returns what to send the client in
// its place. start says whether the line starts a reply.
func (f *frontConn) divertReply(line []byte, start bool) []byte {
	switch f.divert {
	case divertOpen:
		if start && bytes.HasPrefix(line, []byte("250")) {
			f.convertNext = true
			f.divertRest(line, divertNone)
			return []byte(dataReady)
		}
		// A refusal of DATA, as go-smtp words it: passed on.
		f.divertRest(line, divertNone)
		return line
	case divertChunk:
		switch {
		case start && bytes.HasPrefix(line, []byte("250")):
			f.divertRest(line, divertNone)
			return nil
		case start && bytes.HasPrefix(line, []byte("421")):
			// The connection closes: the client hears why at once.
			f.divertRest(line, divertNone)
			return line
		}
		f.failedReply = append(f.failedReply, line...)
		if start {
			f.refusal = append(f.refusal[:0], line...)
		}
		f.divertRest(line, divertNone)
		return nil
	case divertLast:
		if start && (line[0] == '4' || line[0] == '5') {
			f.refusal = append(f.refusal[:0], line...)
		}
		f.divertRest(line, divertNone)
		return line
	}
	return line
}

// divertRest keeps the divert for the next line of a multi-line reply and
// sets next once the reply is over.
func (f *frontConn) divertRest(line []byte, next divert) {
	if len(line) < 4 || line[3] != '-' {
		f.divert = next
	}
}

// chunkRefusal returns go-smtp's refusal of a chunk of the DATA transfer
// in progress, if it refused one. go-smtp refuses a chunk beyond the size
// limit itself, then ends the session's Data with ErrDataReset, as for an
// abort; the session asks here, so that it reports the refusal the client
// gets (in the delivery log and to observers) and not an abort.
func (f *frontConn) chunkRefusal() (*protocols.Error, bool) {
	f.mu.Lock()
	line := string(bytes.TrimRight(f.refusal, "\r\n"))
	f.mu.Unlock()
	if len(line) < 4 || (line[0] != '4' && line[0] != '5') {
		return nil, false
	}
	code, err := strconv.Atoi(line[:3])
	if err != nil {
		return nil, false
	}
	text := line[4:]
	var enhanced [3]int
	if fields := strings.SplitN(text, " ", 2); len(fields) == 2 {
		if n, _ := fmt.Sscanf(fields[0], "%d.%d.%d", &enhanced[0], &enhanced[1], &enhanced[2]); n == 3 {
			text = fields[1]
		} else {
			enhanced = [3]int{}
		}
	}
	if line[0] == '4' {
		return protocols.Temporaryf(code, enhanced, gosmtp.ErrDataReset, "%s", text), true
	}
	return protocols.Permanentf(code, enhanced, gosmtp.ErrDataReset, "%s", text), true
}
