package smtp

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// The MX port reads every client byte through a frontConn before go-smtp
// does, for one reason: RFC 5321 section 4.5.1 requires a server to
// accept "RCPT TO:<Postmaster>" without a domain, and go-smtp (v0.25.1)
// refuses it with 501 in its own parser, before the session sees it. The
// front rewrites exactly that command line to the primary domain's
// postmaster address (Config.Postmaster) and hands every other byte on
// unchanged.
//
// To know which bytes are command lines, the front follows the SMTP state
// the way go-smtp reads it: one command line at a time; after a 354 reply
// to DATA, message content up to the CRLF "." CRLF line (the same rule as
// go-smtp's DATA reader, which ignores a bare LF); after a BDAT command
// that go-smtp parses, exactly the chunk's byte count. Message content is
// never looked at for commands, and never changed.
//
// STARTTLS: go-smtp runs TLS over the connection it was given, so after a
// STARTTLS of its own the front would only see ciphertext. The front
// therefore runs STARTTLS itself (go-smtp's TLSConfig stays nil on the
// MX port): it hands go-smtp a RSET in place of the STARTTLS line (the
// transaction is discarded, as RFC 3207 section 4.2 requires), answers
// 220 in place of the RSET's reply, runs the handshake, and reads the
// commands that follow from the TLS connection. Bytes the client sent
// after STARTTLS before the handshake are discarded (RFC 3207 section 4.2,
// the command injection of CVE-2011-0411). As go-smtp does not see the
// TLS, the front adds STARTTLS (before) or REQUIRETLS (after) to the EHLO
// reply, the session asks the front for the TLS state (connTLS), and
// until a HELO/EHLO is accepted under TLS the front checks it like a
// first greeting and refuses MAIL (503), as go-smtp would after a
// STARTTLS of its own.

// frontMode is what the next client bytes are to go-smtp.
type frontMode int

const (
	frontCommand frontMode = iota // command lines
	frontLong                     // the rest of a command line longer than the buffer
	frontData                     // DATA content, up to the end-of-data line
	frontChunk                    // a BDAT chunk
	frontConvert                  // DATA content handed on as BDAT chunks (frontdata.go)
)

// dot-stuffing states of DATA content, as go-smtp's DATA reader has them.
const (
	dataLineStart = iota // at the start of a line (and of the content)
	dataDot              // "." at the start of a line
	dataDotCR            // ".\r" at the start of a line
	dataCR               // "\r" inside a line
	dataInLine           // inside a line
)

// frontConn is an MX connection as go-smtp sees it (see above). Read and
// Write run on go-smtp's connection goroutine, except replies that the
// session writes itself when it hangs up (sendAndClose, checkRate), which
// mu orders with go-smtp's.
type frontConn struct {
	srv  *Server
	base net.Conn // the connection as accepted (a *trackedConn)

	// cmu guards cur alone, so that Close and deadlines never wait for
	// a handshake that mu is held through; cur changes under both.
	cmu sync.Mutex
	cur net.Conn // base, or the *tls.Conn after STARTTLS

	mu   sync.Mutex
	tls  *tls.Conn // nil before STARTTLS
	in   *bufio.Reader
	wbuf []byte // reply bytes written by go-smtp, not yet a whole line
	// held: whole replies kept back while the client's pipelined group
	// is still being read (see grouping). inputPending: the client had
	// sent more than the command line go-smtp is answering; grouped:
	// that command's reply may wait (MAIL, RCPT, RSET).
	held         []byte
	inputPending bool
	grouped      bool
	// replyStart: the next reply line starts a reply (the previous one
	// was the last line of a reply).
	replyStart bool
	// startTLS: the RSET that stands for a STARTTLS was handed to go-smtp
	// and its reply is to become the 220.
	startTLS bool
	// dataNext: go-smtp answered 354, message content comes next.
	dataNext bool
	// override, when set, replaces go-smtp's reply to the next command:
	// the front's own refusal of a command it handed go-smtp in a
	// harmless form (see greetingAfterTLS).
	override string

	// freshTLS: STARTTLS succeeded and no HELO/EHLO was accepted since.
	freshTLS bool

	// divert: the next reply of go-smtp answers a command the front made
	// of DATA (frontdata.go). convertNext: go-smtp took the "BDAT 0" that
	// stands for DATA, and message content comes next. failedReply:
	// go-smtp's refusal of a chunk, to answer the DATA with.
	divert      divert
	convertNext bool
	failedReply []byte
	// converted: the client's last message transfer began with DATA
	// that the front hands on as BDAT (see dataConverted). refusal:
	// go-smtp's refusal of one of its chunks (see chunkRefusal).
	converted bool
	refusal   []byte
	// unstarted counts the transfers handed to go-smtp (the first BDAT
	// of each, the client's or the one that stands for DATA, while the
	// transaction had recipients) whose Data has not begun; started is
	// closed, and replaced, each time one begins (dataBegun).
	// hasRecipients is the session's, set when it starts. See
	// awaitTransferStart.
	unstarted     int
	started       chan struct{}
	hasRecipients func() bool

	// Read state, only touched by Read (go-smtp's goroutine).
	mode      frontMode
	dataState int
	chunkLeft uint64
	pending   []byte // a command line handed out in part
	// convert: DATA is handed to go-smtp as BDAT (frontdata.go), in
	// chunks of at most chunkMax bytes.
	convert  bool
	chunkMax int
	// clientChunking: the client's own BDAT transfer may be open in
	// go-smtp, so DATA goes to go-smtp as it is, to be refused.
	clientChunking bool
	conv           dataConversion
	chunkOut       []byte // chunk bytes still to hand go-smtp
}

// minFrontBuffer is the least size of the front's read buffer, which
// holds at least a whole command line of Config.MaxLineLength: longer
// lines are handed on as they come, and go-smtp refuses them.
const minFrontBuffer = 4096

// newFrontConn wraps an accepted MX connection.
func (s *Server) newFrontConn(c net.Conn) *frontConn {
	size := max(s.cfg.MaxLineLength+2, minFrontBuffer)
	f := &frontConn{srv: s, base: c, cur: c, replyStart: true, convert: true, chunkMax: convertChunk}
	f.in = bufio.NewReaderSize(flushingReader{f: f, r: c}, size)
	return f
}

// Grouping replies (RFC 2920 section 3.1). A client that pipelines sends
// MAIL, its RCPTs and DATA in one go and reads the replies after. go-smtp
// writes each reply as it goes, one TLS record and one system call each
// (and one read for the client). The front keeps the replies to MAIL,
// RCPT and RSET back while more of the client's commands are already
// buffered, and sends what it keeps with the next reply that is not
// kept back (the 354 to DATA, at the latest), or before it waits for the
// client's next bytes (flushingReader), or when the connection closes.
// A client that sends one command at a time gets every reply at once, as
// before: nothing of its is buffered when go-smtp answers.

// flushingReader is what the front's read buffer reads the client's
// bytes from: it sends the replies held back before every read from the
// connection, since the client may be waiting for them to go on.
type flushingReader struct {
	f *frontConn
	r io.Reader
}

func (fr flushingReader) Read(p []byte) (int, error) {
	fr.f.mu.Lock()
	err := fr.f.flushLocked()
	fr.f.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return fr.r.Read(p)
}

// groupedCommand reports whether line, a command line handed to go-smtp,
// is one whose reply may wait for the rest of a pipelined group.
func groupedCommand(line []byte) bool {
	if len(line) < 4 {
		return false
	}
	switch strings.ToUpper(string(line[:4])) {
	case "MAIL", "RCPT", "RSET":
		return true
	}
	return false
}

// conn returns the connection the front reads and writes now.
func (f *frontConn) conn() net.Conn {
	f.cmu.Lock()
	defer f.cmu.Unlock()
	return f.cur
}

// tlsState returns the state of the TLS the front runs, if any.
func (f *frontConn) tlsState() (tls.ConnectionState, bool) {
	f.mu.Lock()
	t := f.tls
	f.mu.Unlock()
	if t == nil {
		return tls.ConnectionState{}, false
	}
	return t.ConnectionState(), true
}

// Read hands go-smtp the next client bytes: one command line (rewritten
// when it is a bare postmaster RCPT), or message content. An error (the
// client gone, a timeout) is handed on once a transfer's Data has begun
// (awaitTransferStart).
func (f *frontConn) Read(p []byte) (int, error) {
	n, err := f.read(p)
	if err != nil {
		f.awaitTransferStart()
	}
	return n, err
}

// awaitTransferStart waits, for at most bdatSettleTimeout, until the
// session's Data of every BDAT transfer go-smtp took is running.
// go-smtp v0.25.1 (and v0.26.0) starts Data on a goroutine of its own
// that asks the connection for its session; a read error ends the
// connection, whose Close clears the session, and a goroutine that got
// there second dereferenced nil. go-smtp recovered that panic, but it was
// logged as an error, with its stack, whenever a client went away right
// after DATA (or after a BDAT and an RSET). A transfer go-smtp refused
// (no recipient yet) starts no goroutine and is not counted.
func (f *frontConn) awaitTransferStart() {
	timer := time.NewTimer(bdatSettleTimeout)
	defer timer.Stop()
	for {
		f.mu.Lock()
		unstarted, started := f.unstarted, f.started
		f.mu.Unlock()
		if unstarted <= 0 {
			return
		}
		select {
		case <-started:
		case <-timer.C:
			return
		case <-f.srv.ctx.Done():
			// Shutting down: Close does not wait for this.
			return
		}
	}
}

// transferHanded counts a transfer whose first chunk of size bytes the
// front hands go-smtp, when go-smtp will take it: the transaction has
// recipients (go-smtp reads on only after it has answered the last
// command, so the session's state is go-smtp's) and the chunk is within
// the size limit.
func (f *frontConn) transferHanded(size uint64) {
	if limit := f.srv.cfg.MaxMessageBytes; limit > 0 && size > uint64(limit) {
		return
	}
	f.mu.Lock()
	ready := f.hasRecipients
	f.mu.Unlock()
	if ready == nil || !ready() {
		return
	}
	f.mu.Lock()
	f.unstarted++
	if f.started == nil {
		f.started = make(chan struct{})
	}
	f.mu.Unlock()
}

// dataBegun tells the front that the session's Data of a transfer is
// running.
func (f *frontConn) dataBegun() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unstarted > 0 {
		f.unstarted--
	}
	if f.started != nil {
		close(f.started)
	}
	f.started = make(chan struct{})
}

// watchRecipients gives the front the session's check of whether its
// transaction has recipients, which go-smtp requires before BDAT.
func (f *frontConn) watchRecipients(hasRecipients func() bool) {
	f.mu.Lock()
	f.hasRecipients = hasRecipients
	f.mu.Unlock()
}

// read is Read without the wait.
func (f *frontConn) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(f.pending) > 0 {
		n := copy(p, f.pending)
		f.pending = f.pending[n:]
		return n, nil
	}
	if len(f.chunkOut) > 0 {
		n := copy(p, f.chunkOut)
		f.chunkOut = f.chunkOut[n:]
		return n, nil
	}
	f.mu.Lock()
	in := f.in
	f.grouped, f.inputPending = false, false
	if f.dataNext {
		f.dataNext = false
		f.mode, f.dataState = frontData, dataLineStart
	}
	if f.convertNext {
		f.convertNext = false
		f.mode = frontConvert
		f.conv = dataConversion{state: dataLineStart, chunkMax: f.chunkMax, chunk: f.conv.chunk}
	}
	f.mu.Unlock()
	if f.mode == frontChunk && f.chunkLeft == 0 {
		f.mode = frontCommand
	}
	if f.mode == frontConvert && f.conv.last {
		f.mode = frontCommand
	}
	switch f.mode {
	case frontConvert:
		return f.readConverted(in, p)
	case frontData:
		return f.readData(in, p)
	case frontChunk:
		return f.readChunk(in, p)
	case frontLong:
		return f.readLong(in, p)
	}
	line, err := in.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// Longer than any command go-smtp accepts: hand it on as it is.
		f.mode = frontLong
		n := copy(p, line)
		f.pending = append(f.pending[:0], line[n:]...)
		return n, nil
	}
	if len(line) == 0 {
		return 0, err
	}
	// A last line without LF (the connection ended) is handed on as is.
	out := f.command(line)
	f.mu.Lock()
	f.grouped = groupedCommand(out) && !f.startTLS
	f.inputPending = in.Buffered() > 0
	f.mu.Unlock()
	n := copy(p, out)
	if n < len(out) {
		f.pending = append(f.pending[:0], out[n:]...)
	}
	return n, nil
}

// readLong hands on the rest of an over-long command line.
func (f *frontConn) readLong(in *bufio.Reader, p []byte) (int, error) {
	if _, err := in.Peek(1); err != nil {
		return 0, err
	}
	buf, _ := in.Peek(min(len(p), in.Buffered()))
	if i := bytes.IndexByte(buf, '\n'); i >= 0 {
		buf = buf[:i+1]
		f.mode = frontCommand
	}
	n := copy(p, buf)
	_, _ = in.Discard(n)
	return n, nil
}

// readChunk hands on the bytes of a BDAT chunk.
func (f *frontConn) readChunk(in *bufio.Reader, p []byte) (int, error) {
	if uint64(len(p)) > f.chunkLeft {
		p = p[:f.chunkLeft]
	}
	n, err := in.Read(p)
	f.chunkLeft -= uint64(n)
	if f.chunkLeft == 0 {
		f.mode = frontCommand
	}
	return n, err
}

// readData hands on DATA content up to and including the end-of-data
// line, and no further: what follows are commands again.
func (f *frontConn) readData(in *bufio.Reader, p []byte) (int, error) {
	if _, err := in.Peek(1); err != nil {
		return 0, err
	}
	buf, _ := in.Peek(min(len(p), in.Buffered()))
	n := 0
	for n < len(buf) {
		end := f.dataByte(buf[n])
		n++
		if end {
			f.mode = frontCommand
			break
		}
	}
	copy(p, buf[:n])
	_, _ = in.Discard(n)
	return n, nil
}

// dataByte advances the dot-stuffing state over c and reports whether c
// ends the content (the LF of CRLF "." CRLF).
func (f *frontConn) dataByte(c byte) bool {
	switch f.dataState {
	case dataLineStart:
		switch c {
		case '.':
			f.dataState = dataDot
		case '\r':
			f.dataState = dataCR
		default:
			f.dataState = dataInLine
		}
	case dataDot:
		if c == '\r' {
			f.dataState = dataDotCR
		} else {
			f.dataState = dataInLine
		}
	case dataDotCR:
		if c == '\n' {
			return true
		}
		f.dataState = dataInLine
	case dataCR:
		if c == '\n' {
			f.dataState = dataLineStart
		} else {
			f.dataState = dataInLine
		}
	case dataInLine:
		if c == '\r' {
			f.dataState = dataCR
		}
	}
	return false
}

// command returns the command line to hand go-smtp for line (which ends
// in LF, or is the last bytes of the connection), and sets the mode for
// the bytes after it.
func (f *frontConn) command(line []byte) []byte {
	text := strings.TrimRight(string(line), "\r\n")
	// go-smtp takes any line that starts with STARTTLS for STARTTLS.
	if len(text) >= 8 && strings.EqualFold(text[:8], "STARTTLS") && f.canStartTLS() {
		f.mu.Lock()
		f.startTLS = true
		// RFC 3207 section 4.2: nothing the client sent before the
		// handshake may count as sent under TLS.
		_, _ = f.in.Discard(f.in.Buffered())
		f.mu.Unlock()
		return []byte("RSET\r\n")
	}
	if f.freshTLS && len(text) >= 4 && (len(text) == 4 || text[4] == ' ') {
		switch strings.ToUpper(text[:4]) {
		case "EHLO", "HELO":
			return f.greetingAfterTLS(line, text)
		case "MAIL":
			// RFC 3207 section 4.2: after STARTTLS the client starts
			// with EHLO; go-smtp, which did not see the STARTTLS, would
			// take MAIL. (RCPT, DATA and BDAT find no transaction.)
			f.mu.Lock()
			f.override = "503 5.5.1 Send EHLO first after STARTTLS"
			f.mu.Unlock()
			return []byte("NOOP\r\n")
		}
	}
	if len(text) == 4 && strings.EqualFold(text, "DATA") && f.convert && !f.clientChunking {
		f.mu.Lock()
		f.divert = divertOpen
		f.converted = true
		f.refusal = f.refusal[:0]
		f.mu.Unlock()
		f.transferHanded(0)
		return []byte("BDAT 0\r\n")
	}
	if len(text) >= 4 && (len(text) == 4 || text[4] == ' ') {
		switch strings.ToUpper(text[:4]) {
		case "MAIL", "RSET", "EHLO", "HELO":
			f.clientChunking = false
			f.mu.Lock()
			f.converted = false
			f.mu.Unlock()
		}
	}
	if len(text) < 6 || text[4] != ' ' {
		return line
	}
	switch strings.ToUpper(text[:4]) {
	case "BDAT":
		size, ok := bdatChunkSize(text[5:])
		if ok && size > 0 {
			f.mode, f.chunkLeft = frontChunk, size
		}
		if ok && !f.clientChunking {
			f.transferHanded(size)
		}
		f.clientChunking = !ok || !strings.HasSuffix(strings.ToUpper(strings.TrimSpace(text)), " LAST")
	case "RCPT":
		if rewritten, ok := f.rewritePostmaster(line); ok {
			return rewritten
		}
	}
	return line
}

// greetingAfterTLS checks the first HELO/EHLO after STARTTLS. go-smtp
// saw no STARTTLS and takes it for a repeated greeting, whose bad
// argument the session can only answer by hanging up (checkRepeatedHelo).
// After STARTTLS the client starts afresh (RFC 3207 section 4.2), so a
// bad argument gets what a first greeting gets (501 5.5.4): go-smtp is
// handed a HELO without argument, which it refuses without changing
// anything, and the front gives the refusal errBadHelo's text.
func (f *frontConn) greetingAfterTLS(line []byte, text string) []byte {
	arg := ""
	if len(text) > 5 {
		arg = strings.TrimSpace(text[5:])
		if i := strings.IndexByte(arg, ' '); i >= 0 {
			arg = arg[:i]
		}
	}
	if acceptableHelo(arg) {
		f.freshTLS = false
		return line
	}
	f.srv.log.Info("command refused", "op", "helo", "code", errBadHelo.Code, "enhanced", "5.5.4", "helo", quoteHelo(arg), "tls", true)
	f.mu.Lock()
	f.override = "501 5.5.4 " + errBadHelo.Message
	f.mu.Unlock()
	return []byte("HELO\r\n")
}

// dataConverted reports whether the message transfer in progress on
// this connection is the client's DATA, which go-smtp sees as BDAT (the
// session's Data runs from go-smtp's "BDAT 0" to the last chunk, and the
// client's next transaction can only begin after it).
func (f *frontConn) dataConverted() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.converted
}

// canStartTLS reports whether the front runs a STARTTLS now: TLS is
// configured and not yet running. Otherwise the line goes to go-smtp,
// which refuses it (502) as it has no TLS configuration.
func (f *frontConn) canStartTLS() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.srv.cfg.TLS != nil && f.tls == nil
}

// bdatChunkSize returns the chunk size of a BDAT argument that go-smtp
// accepts (a size, optionally LAST); go-smtp reads the chunk after such a
// command even when it refuses the command, and none after the others.
func bdatChunkSize(arg string) (uint64, bool) {
	args := strings.Fields(arg)
	if len(args) == 0 || len(args) > 2 || (len(args) == 2 && !strings.EqualFold(args[1], "LAST")) {
		return 0, false
	}
	size, err := strconv.ParseUint(args[0], 10, 32)
	if err != nil {
		return 0, false
	}
	return size, true
}

// rewritePostmaster rewrites "RCPT TO:<postmaster>" (any case, optional
// space after the colon, optional parameters) to the primary domain's
// postmaster address, keeping every other byte of the line.
func (f *frontConn) rewritePostmaster(line []byte) ([]byte, bool) {
	const to, bare = "TO:", "<postmaster>"
	rest := line[5:]
	i := 0
	for i < len(rest) && (rest[i] == ' ' || rest[i] == '\t') {
		i++
	}
	if len(rest)-i < len(to) || !strings.EqualFold(string(rest[i:i+len(to)]), to) {
		return nil, false
	}
	i += len(to)
	for i < len(rest) && (rest[i] == ' ' || rest[i] == '\t') {
		i++
	}
	if len(rest)-i < len(bare) || !strings.EqualFold(string(rest[i:i+len(bare)]), bare) {
		return nil, false
	}
	after := rest[i+len(bare):]
	if len(after) > 0 && !bytes.ContainsRune([]byte(" \t\r\n"), rune(after[0])) {
		return nil, false
	}
	target := f.srv.postmaster()
	if target == "" {
		return nil, false
	}
	out := make([]byte, 0, len(line)+len(target))
	out = append(out, line[:5+i]...)
	out = append(out, '<')
	out = append(out, target...)
	out = append(out, '>')
	out = append(out, after...)
	return out, true
}

// Write sends go-smtp's replies on, with the changes described above:
// the 220 of a STARTTLS (then the handshake), the STARTTLS or REQUIRETLS
// capability in the EHLO reply; a 354 switches Read to message content.
func (f *frontConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wbuf = append(f.wbuf, p...)
	var out []byte
	for {
		i := bytes.IndexByte(f.wbuf, '\n')
		if i < 0 {
			break
		}
		line := f.wbuf[:i+1]
		start := f.replyStart
		f.replyStart = len(line) < 4 || line[3] != '-'
		if f.divert != divertNone {
			out = append(out, f.divertReply(line, start)...)
			f.wbuf = f.wbuf[i+1:]
			continue
		}
		switch {
		case start && f.startTLS:
			// The reply to the RSET that stands for STARTTLS.
			f.startTLS = false
			out = append(out, "220 2.0.0 Ready to start TLS\r\n"...)
			f.wbuf = f.wbuf[i+1:]
			f.held = append(f.held, out...)
			if err := f.flushLocked(); err != nil {
				return 0, err
			}
			if err := f.handshakeLocked(); err != nil {
				return 0, err
			}
			out = out[:0]
			continue
		case start && f.override != "":
			out = append(out, f.override+"\r\n"...)
			f.override = ""
			f.wbuf = f.wbuf[i+1:]
			continue
		case start && bytes.HasPrefix(line, []byte("354")):
			f.dataNext = true
		}
		out = append(out, line...)
		if start && bytes.HasPrefix(line, []byte("250-Hello ")) {
			// go-smtp's EHLO reply; its other replies are one line.
			if f.tls == nil && f.srv.cfg.TLS != nil {
				out = append(out, "250-STARTTLS\r\n"...)
			} else if f.tls != nil {
				out = append(out, "250-REQUIRETLS\r\n"...)
			}
		}
		f.wbuf = f.wbuf[i+1:]
	}
	if len(f.wbuf) > 0 && !f.replyStart {
		// Not expected (go-smtp writes whole lines); never hold bytes.
		out = append(out, f.wbuf...)
		f.wbuf = f.wbuf[:0]
	}
	f.held = append(f.held, out...)
	if f.grouped && f.inputPending && f.replyStart {
		return len(p), nil // sent with the group's last reply (see grouping)
	}
	if err := f.flushLocked(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// flushLocked sends the replies held back.
func (f *frontConn) flushLocked() error {
	if len(f.held) == 0 {
		return nil
	}
	err := f.writeLocked(f.held)
	f.held = f.held[:0]
	return err
}

// writeLocked writes b to the current connection.
func (f *frontConn) writeLocked(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, err := f.cur.Write(b)
	return err
}

// handshakeLocked runs the server side of a STARTTLS handshake on the
// accepted connection; on failure the connection is closed (the client
// and server no longer agree on what the stream is).
func (f *frontConn) handshakeLocked() error {
	tc := tls.Server(f.base, f.srv.smtpTLS)
	_ = f.base.SetDeadline(time.Now().Add(f.srv.cfg.ReadTimeout))
	err := tc.Handshake()
	_ = f.base.SetDeadline(time.Time{})
	tracked, _ := f.base.(*trackedConn)
	if err != nil {
		f.srv.log.Info("starttls failed", "conn", connLabel(tracked), "err", err)
		_ = f.base.Close()
		return err
	}
	if obs := f.srv.cfg.Observer; obs != nil && tracked != nil && tracked.startTLS.Running() {
		tracked.startTLS.Confirm(obs)
	}
	f.cmu.Lock()
	f.tls, f.cur = tc, tc
	f.cmu.Unlock()
	f.freshTLS = true
	f.in = bufio.NewReaderSize(flushingReader{f: f, r: tc}, f.in.Size())
	return nil
}

// connLabel returns the connection id for logs.
func connLabel(t *trackedConn) string {
	if t == nil {
		return ""
	}
	return t.id
}

// Close closes the connection (with a TLS close_notify once TLS runs),
// after sending any replies held back. It does not wait for a reply
// being written, or a handshake, on go-smtp's goroutine.
func (f *frontConn) Close() error {
	if f.mu.TryLock() {
		_ = f.flushLocked()
		f.mu.Unlock()
	}
	return f.conn().Close()
}

// LocalAddr returns the local address.
func (f *frontConn) LocalAddr() net.Addr { return f.base.LocalAddr() }

// RemoteAddr returns the client's address.
func (f *frontConn) RemoteAddr() net.Addr { return f.base.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (f *frontConn) SetDeadline(t time.Time) error { return f.conn().SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (f *frontConn) SetReadDeadline(t time.Time) error { return f.conn().SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (f *frontConn) SetWriteDeadline(t time.Time) error { return f.conn().SetWriteDeadline(t) }

// Unwrap returns the connection as accepted.
func (f *frontConn) Unwrap() net.Conn { return f.base }

var _ io.ReadWriteCloser = (*frontConn)(nil)

// postmaster returns the address a bare "RCPT TO:<postmaster>" goes to,
// or "" when there is none or it could not be put on a command line.
func (s *Server) postmaster() string {
	if s.cfg.Postmaster == nil {
		return ""
	}
	addr := s.cfg.Postmaster()
	if addr == "" || len(addr) > maxAddressLength || strings.ContainsAny(addr, " \t\r\n<>") || !strings.Contains(addr, "@") {
		return ""
	}
	return addr
}

// connTLS returns the TLS state of a session's connection: go-smtp's, or
// on the MX port the front's.
func connTLS(c *gosmtp.Conn) (tls.ConnectionState, bool) {
	if state, ok := c.TLSConnectionState(); ok {
		return state, true
	}
	if f, ok := c.Conn().(*frontConn); ok {
		return f.tlsState()
	}
	return tls.ConnectionState{}, false
}
