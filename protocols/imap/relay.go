package imap

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
)

// relay copies the library's output to the client in whole buffers. The
// library flushes after every response line; while a command runs and
// waits on nothing from the client, the relay holds those lines in its
// buffer (flushed when full) and flushes at the tagged completion, so a
// FETCH of twenty messages is a few TLS records and writes, not one per
// line. Output with no command in flight (a BYE), and output after a
// continuation request (IDLE's updates), is flushed as it comes. It
// follows the output's framing (lines, and the literals announced at
// their end) only to find the lines the front cares about: the greeting
// and the capability lists, which it rewrites (capabilities), and the
// continuation requests and tagged completions, which it reports on
// f.events once they are flushed to the client. When the library closes
// the pipe, the relay closes the client's connection.
func (f *frontConn) relay() {
	defer f.recoverPanic("relay")
	defer close(f.relayDone)
	defer f.closeClient()
	defer close(f.events)
	br := relayReaders.Get().(*bufio.Reader)
	br.Reset(f.pipe)
	defer func() {
		br.Reset(nil)
		relayReaders.Put(br)
	}()
	lineStart := true
	greeted := false
	var tail []byte // the last bytes of a line read in parts
	// waiting: the command in flight has had a continuation request,
	// so it waits on the client.
	waiting := false
	for {
		frag, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) && f.routes.pending.Load() > 0 {
			frag, err = readWhole(br, frag)
		}
		whole := err == nil
		var ev *relayEvent
		f.wmu.Lock()
		if lineStart && greeted {
			frag = f.annotate(frag)
		}
		if lineStart && whole {
			if !greeted {
				greeted = true
				ev = &relayEvent{}
				if bytes.HasPrefix(frag, []byte("* OK ")) {
					if f.srv.greeting.Load() == nil {
						line := bytes.Clone(frag)
						f.srv.greeting.CompareAndSwap(nil, &line)
					}
					if f.greetedEarly {
						// The front sent it already.
						frag = nil
					}
				}
				if frag != nil {
					frag = f.rewriteCaps(frag)
				}
			} else {
				var e relayEvent
				var isEvent bool
				frag, e, isEvent = f.classify(frag)
				if isEvent {
					ev = &e
				}
			}
		}
		if whole && greeted {
			frag = f.withBinaryOffset(frag)
		}
		frag = f.routes.replace(frag)
		_, werr := f.bw.Write(frag)
		if whole {
			end := frag
			if len(tail) > 0 {
				end = append(tail, frag...)
			}
			n := literalAtEnd(end)
			if n > 0 && werr == nil {
				_, werr = io.CopyN(f.bw, br, n)
			}
			tail = tail[:0]
			// After a literal the response line goes on.
			lineStart = n < 0
		} else if len(frag) > 0 {
			tail = append(tail[:0], frag[max(0, len(frag)-32):]...)
			lineStart = false
		}
		if ev != nil {
			// After a continuation request the command waits on the
			// client (IDLE's updates, SASL steps): flush as it comes.
			waiting = ev.cont
		}
		if werr == nil && (ev != nil || err != nil || (br.Buffered() == 0 && (waiting || f.inflight() == ""))) {
			werr = f.flushLocked()
		}
		f.wmu.Unlock()
		if werr != nil {
			return
		}
		if ev != nil {
			select {
			case f.events <- *ev:
			case <-f.quit:
				return
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// classify looks at one whole line of the library's output: a
// continuation request or a tagged completion is an event; capability
// lists are rewritten.
func (f *frontConn) classify(line []byte) ([]byte, relayEvent, bool) {
	switch {
	case bytes.HasPrefix(line, []byte("+")):
		return line, relayEvent{cont: true}, f.inflight() != ""
	case bytes.HasPrefix(line, []byte("* CAPABILITY ")), bytes.HasPrefix(line, []byte("* OK [CAPABILITY ")):
		return f.rewriteCaps(line), relayEvent{}, false
	case bytes.HasPrefix(line, []byte("* ENABLED")):
		f.noteEnabled(line)
		return f.withEnabled(line), relayEvent{}, false
	case bytes.HasPrefix(line, []byte("* LIST ")), bytes.HasPrefix(line, []byte("* LSUB ")), bytes.HasPrefix(line, []byte("* STATUS ")):
		return f.unescapeNames(line), relayEvent{}, false
	case bytes.HasPrefix(line, []byte("* ")):
		return line, relayEvent{}, false
	}
	// A tagged status response: "tag OK ...".
	fields := bytes.SplitN(line, []byte(" "), 3)
	if len(fields) < 2 || string(fields[0]) != f.inflight() {
		return line, relayEvent{}, false
	}
	status := strings.TrimRight(string(fields[1]), "\r\n")
	if len(fields) == 3 && bytes.HasPrefix(fields[2], []byte("[CAPABILITY ")) {
		line = f.rewriteCaps(line)
	}
	f.routes.clear()
	return f.withTagged(line, status), relayEvent{status: status}, true
}

// literalAtEnd returns the size of the literal a whole output line
// announces at its end ("{N}" or "~{N}" before CRLF), or -1.
func literalAtEnd(line []byte) int64 {
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if len(line) < 3 || line[len(line)-1] != '}' {
		return -1
	}
	open := bytes.LastIndexByte(line, '{')
	if open < 0 {
		return -1
	}
	n, err := strconv.ParseInt(string(line[open+1:len(line)-1]), 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// rewriteCaps rewrites the capability list in a line (CAPABILITY
// response or [CAPABILITY] code) to what the front offers: LITERAL+
// stands for the library's LITERAL- (it covers it), STARTTLS,
// LOGINDISABLED and AUTH= follow the client connection's TLS state, which
// the library cannot see, and ID, SORT, SORT=DISPLAY, ESORT, THREAD,
// CONDSTORE, QRESYNC, PARTIAL, QUOTA, MULTIAPPEND and COMPRESS=DEFLATE
// (after login, until compression is on) are the front's. The library lists AUTH=
// exactly when the client has not logged in (it is told that
// authentication is always allowed).
func (f *frontConn) rewriteCaps(line []byte) []byte {
	s := string(line)
	start := strings.Index(s, "CAPABILITY ")
	if start < 0 {
		return line
	}
	start += len("CAPABILITY ")
	end := len(s)
	if i := strings.IndexAny(s[start:], "]\r\n"); i >= 0 {
		end = start + i
	}
	var caps []string
	preAuth, literal := false, false
	for _, c := range strings.Fields(s[start:end]) {
		u := strings.ToUpper(c)
		switch {
		case strings.HasPrefix(u, "AUTH="):
			preAuth = true
			if !f.mayAuthenticate() {
				continue
			}
		case u == "STARTTLS" || u == "LOGINDISABLED":
			continue
		case u == "LITERAL-" || u == "LITERAL+":
			// RFC 7888: LITERAL+ allows every non-synchronizing
			// literal LITERAL- does and more, and the front reads
			// them in every state (the library lists LITERAL-
			// before login, both after). Listing both would tell a
			// client two limits: LITERAL+ alone is offered, once.
			if !literal {
				caps = append(caps, "LITERAL+")
				literal = true
			}
			continue
		}
		caps = append(caps, c)
	}
	if preAuth && !f.mayAuthenticate() {
		caps = append(caps, "LOGINDISABLED")
	}
	if preAuth && f.mayStartTLS() {
		caps = append(caps, "STARTTLS")
	}
	if preAuth {
		// The library lists ENABLE after login only; clients that
		// read the capabilities once, before login (Python's
		// imaplib), would never enable UTF8=ACCEPT or CONDSTORE.
		// ENABLE itself stays an authenticated-state command (RFC
		// 5161), as Dovecot also lists it before login.
		caps = append(caps, "ENABLE")
	}
	caps = append(caps, "ID", "SORT", "SORT=DISPLAY", "ESORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "CONDSTORE", "QRESYNC", "PARTIAL")
	caps = append(caps, quotaCapabilities...)
	caps = append(caps, multiAppendCapability)
	if !preAuth && !f.isCompressed() {
		caps = append(caps, "COMPRESS=DEFLATE")
	}
	return []byte(s[:start] + strings.Join(caps, " ") + s[end:])
}
