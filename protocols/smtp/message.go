package smtp

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-message/textproto"

	"github.com/mailcluster/mailcluster/protocols"
)

// Errors of parseMessage.
var (
	// errHeaderTooLarge means the header section does not end within the
	// limit.
	errHeaderTooLarge = errors.New("header section too large")
	// errMalformedHeader means the header section is not a sequence of
	// RFC 5322 header fields.
	errMalformedHeader = errors.New("malformed header section")
)

// parseMessage parses the header section of msg, reading at most
// maxHeader bytes of it. A message may have no body (its header section
// then ends at the end of the data) or no header fields at all (it starts
// with an empty line). The returned errors wrap errHeaderTooLarge or
// errMalformedHeader.
func parseMessage(msg []byte, maxHeader int) (textproto.Header, error) {
	if maxHeader <= 0 {
		return textproto.Header{}, fmt.Errorf("parse message: %w", errHeaderTooLarge)
	}
	lr := &io.LimitedReader{R: bytes.NewReader(msg), N: int64(maxHeader)}
	br := bufio.NewReaderSize(lr, 4096)
	hdr, err := textproto.ReadHeader(br)
	consumed := maxHeader - int(lr.N) - br.Buffered()
	limitHit := lr.N == 0 && len(msg) > maxHeader
	if err != nil {
		if limitHit {
			return textproto.Header{}, fmt.Errorf("parse message: %w", errHeaderTooLarge)
		}
		// The library's error quotes the offending line, which is message
		// content: keep it out of errors that may be logged.
		return textproto.Header{}, fmt.Errorf("parse message: %w", errMalformedHeader)
	}
	if limitHit && !endsWithEmptyLine(msg[:consumed]) {
		// ReadHeader stopped at the limit as if at the end of the data.
		return textproto.Header{}, fmt.Errorf("parse message: %w", errHeaderTooLarge)
	}
	return hdr, nil
}

// endsWithEmptyLine reports whether a header section read by ReadHeader
// was ended by an empty line (rather than by the end of the data).
func endsWithEmptyLine(section []byte) bool {
	switch {
	case bytes.Equal(section, []byte("\n")), bytes.Equal(section, []byte("\r\n")):
		return true
	default:
		return bytes.HasSuffix(section, []byte("\n\n")) || bytes.HasSuffix(section, []byte("\n\r\n"))
	}
}

// messageError maps a parseMessage error to the reply.
func messageError(err error, maxHeader int) *protocols.Error {
	if errors.Is(err, errHeaderTooLarge) {
		return protocols.Permanentf(552, [3]int{5, 3, 4}, err, "Message header section exceeds %d bytes", maxHeader)
	}
	return protocols.Permanentf(554, [3]int{5, 6, 0}, err, "Malformed message header: every header line must be a \"Name: value\" field or a folded continuation, and the header must end with an empty line (RFC 5322 section 2.2)")
}

// deliveryFingerprint identifies a message as its sender sent it, so that
// a retry after a lost acknowledgement (RFC 1047: the server committed the
// message, the sender never saw the 250) is stored once per recipient. It
// is set only when the message has a Message-ID, like the duplicate
// suppression of Cyrus: a message without one is never merged with
// another. The trace headers this server adds are not part of it.
func deliveryFingerprint(from, messageID string, msg []byte) []byte {
	if strings.TrimSpace(messageID) == "" {
		return nil
	}
	body := sha256.Sum256(msg)
	h := sha256.New()
	h.Write([]byte("mailcluster/smtp-delivery/v1\x00"))
	h.Write([]byte(from))
	h.Write([]byte{0})
	h.Write([]byte(strings.TrimSpace(messageID)))
	h.Write([]byte{0})
	h.Write(body[:])
	return h.Sum(nil)
}
