package smtp

import (
	"errors"
	"io"
	"runtime"
	"time"
)

// bdatSettleTimeout bounds the wait for go-smtp's goroutine of a finished
// BDAT transfer; it normally ends within microseconds.
const bdatSettleTimeout = 5 * time.Second

// bdatCall is a Data call fed with BDAT chunks. go-smtp v0.25.1 runs it in
// a goroutine that, after Data returns, sends the result on the
// connection's dataResult channel, read from the Conn field at that
// moment, and then closes the pipe reader. A client that aborts a transfer
// (RSET) and pipelines a new BDAT transaction can make go-smtp replace that
// channel before the old goroutine sends on it: the old result (an abort,
// never a success) would then answer the new transaction. So a new MAIL
// waits until the previous transfer's goroutine has closed its reader.
type bdatCall struct {
	r    *io.PipeReader
	done chan struct{} // closed when Data returns
}

// beginData registers r when it is go-smtp's BDAT pipe; the returned
// function marks the Data call finished.
func (s *session) beginData(r io.Reader) (end func()) {
	pr, ok := r.(*io.PipeReader)
	if !ok {
		return func() {}
	}
	call := &bdatCall{r: pr, done: make(chan struct{})}
	s.mu.Lock()
	s.bdat = call
	s.mu.Unlock()
	return func() { close(call.done) }
}

// awaitPreviousBDAT waits until go-smtp's goroutine for the previous BDAT
// transfer of this session has delivered its result and closed its reader.
// It must not be called with go-smtp's connection lock held (from Reset),
// since that goroutine takes it.
func (s *session) awaitPreviousBDAT() {
	s.mu.Lock()
	call := s.bdat
	s.bdat = nil
	s.mu.Unlock()
	if call == nil {
		return
	}
	deadline := time.Now().Add(bdatSettleTimeout)
	timer := time.NewTimer(bdatSettleTimeout)
	defer timer.Stop()
	select {
	case <-call.done:
	case <-timer.C:
		s.log.Warn("previous BDAT transfer still running")
		return
	}
	// After Data returned, one of the pipe's ends is closed or about to
	// be, so a zero-length read does not block: it reports the writer's
	// error until go-smtp closes the reader, right after sending the
	// result.
	for i := 0; ; i++ {
		if _, err := call.r.Read(nil); errors.Is(err, io.ErrClosedPipe) {
			return
		}
		if time.Now().After(deadline) {
			s.log.Warn("previous BDAT transfer did not finish")
			return
		}
		if i < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(time.Millisecond)
		}
	}
}
