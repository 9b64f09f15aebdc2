package pop3

import (
	"bufio"
	"bytes"
	"net"
	"time"
)

// writeDotStuffed writes data as the lines of a multi-line response
// (RFC 1939 section 3): every line ends with CRLF (a bare LF is turned
// into CRLF, and a last line without an ending gets one) and a line that
// begins with "." gets another "." in front. It does not write the
// terminating ".".
func writeDotStuffed(w *bufio.Writer, data []byte) error {
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) > 0 && line[0] == '.' {
			w.WriteByte('.')
		}
		w.Write(line)
		if _, err := w.WriteString("\r\n"); err != nil {
			return err
		}
	}
	return nil
}

// splitHeader returns the header section of msg including the blank line
// that ends it, and the body after it. A message without a blank line is
// all header; found is false then.
func splitHeader(msg []byte) (header, body []byte, found bool) {
	for i := 0; i < len(msg); {
		end := bytes.IndexByte(msg[i:], '\n')
		if end < 0 {
			break
		}
		line := msg[i : i+end]
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			return msg[:i+end+1], msg[i+end+1:], true
		}
		i += end + 1
	}
	return msg, nil, false
}

// firstLines returns the first n lines of body, line endings included.
func firstLines(body []byte, n int) []byte {
	end := 0
	for ; n > 0 && end < len(body); n-- {
		i := bytes.IndexByte(body[end:], '\n')
		if i < 0 {
			return body
		}
		end += i + 1
	}
	return body[:end]
}

// endsWithBlankLine reports whether a header section already carries the
// blank line that separates it from the body.
func endsWithBlankLine(header []byte) bool {
	return bytes.Equal(header, []byte("\r\n")) || bytes.Equal(header, []byte("\n")) ||
		bytes.HasSuffix(header, []byte("\n\r\n")) || bytes.HasSuffix(header, []byte("\n\n"))
}

// deadlineWriter sets a write deadline before every write, so a client
// that stops reading is dropped after timeout while one that reads slowly
// but steadily can still receive a large message.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	if err := d.conn.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil {
		return 0, err
	}
	return d.conn.Write(p)
}
