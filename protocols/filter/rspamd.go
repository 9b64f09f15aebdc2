package filter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Rspamd asks an rspamd normal worker (its HTTP protocol, /checkv2) about
// spam. rspamd's action decides: "reject" refuses the message, "add
// header" and "rewrite subject" send it to Junk, "soft reject" defers it;
// "greylist" and "no action" accept it. JunkScore and RejectScore, when
// set, replace rspamd's advice (a message rspamd would reject but under
// RejectScore goes to Junk).
type Rspamd struct {
	// URL is the worker's base URL, such as http://127.0.0.1:11333.
	URL string
	// Password is sent as rspamd's Password header when set.
	Password string
	// JunkScore and RejectScore, when positive, decide by score instead
	// of by rspamd's action.
	JunkScore, RejectScore float64
	// Client is the HTTP client; nil means one with Timeout.
	Client *http.Client
	// Timeout bounds one scan (default 20 s).
	Timeout time.Duration
}

// maxRspamdReply bounds the JSON answer read from rspamd.
const maxRspamdReply = 1 << 20

// maxSymbols bounds the symbols recorded in X-Spam-Symbols.
const maxSymbols = 64

// Name identifies the scanner.
func (r *Rspamd) Name() string { return "rspamd" }

type rspamdReply struct {
	Score         float64                    `json:"score"`
	RequiredScore float64                    `json:"required_score"`
	Action        string                     `json:"action"`
	Skipped       bool                       `json:"is_skipped"`
	Symbols       map[string]json.RawMessage `json:"symbols"`
}

// Scan sends msg to rspamd and maps its answer.
func (r *Rspamd) Scan(ctx context.Context, env Envelope, msg []byte) (Verdict, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u, err := url.JoinPath(r.URL, "checkv2")
	if err != nil {
		return Verdict{}, fmt.Errorf("rspamd url: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(msg))
	if err != nil {
		return Verdict{}, fmt.Errorf("rspamd request: %w", err)
	}
	setIf := func(k, v string) {
		if v = headerSafe(v); v != "" {
			req.Header.Add(k, v)
		}
	}
	setIf("IP", env.RemoteIP)
	setIf("Helo", env.Helo)
	setIf("From", env.From)
	for _, rc := range env.Rcpts {
		setIf("Rcpt", rc)
	}
	setIf("User", env.User)
	setIf("Queue-Id", env.QueueID)
	setIf("Password", r.Password)
	client := r.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return Verdict{}, fmt.Errorf("rspamd: %w: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRspamdReply+1))
	if err != nil {
		return Verdict{}, fmt.Errorf("rspamd: read answer: %w: %v", ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Verdict{}, fmt.Errorf("rspamd: %w: HTTP %d", ErrUnavailable, resp.StatusCode)
	}
	if len(body) > maxRspamdReply {
		return Verdict{}, fmt.Errorf("rspamd: %w: answer over %d bytes", ErrUnavailable, maxRspamdReply)
	}
	var rep rspamdReply
	if err := json.Unmarshal(body, &rep); err != nil {
		return Verdict{}, fmt.Errorf("rspamd: %w: answer is not JSON: %v", ErrUnavailable, err)
	}
	return r.verdict(rep), nil
}

// verdict maps rspamd's answer to an action and the header fields that
// record it.
func (r *Rspamd) verdict(rep rspamdReply) Verdict {
	v := Verdict{Action: Accept, Score: rep.Score}
	for name := range rep.Symbols {
		if symbolName(name) {
			v.Symbols = append(v.Symbols, name)
		}
	}
	sort.Strings(v.Symbols)
	if len(v.Symbols) > maxSymbols {
		v.Symbols = v.Symbols[:maxSymbols]
	}
	// rspamd's advice, unless thresholds of our own replace it. A
	// message rspamd would reject but that stays under our reject score
	// is still spam: it goes to Junk. (An answer with is_skipped set, as
	// for GTUBE, still carries the action.)
	reject := rep.Action == "reject"
	if r.RejectScore > 0 {
		reject = rep.Score >= r.RejectScore
	}
	junk := rep.Action == "add header" || rep.Action == "rewrite subject" || rep.Action == "reject"
	if r.JunkScore > 0 {
		junk = rep.Score >= r.JunkScore
	}
	switch {
	case reject:
		v.Action = Reject
	case junk:
		v.Action = Junk
	case rep.Action == "soft reject":
		v.Action = Defer
	}
	spam := v.Action == Junk || v.Action == Reject
	if spam {
		v.Reason = fmt.Sprintf("spam score %.2f", rep.Score)
	}
	var h strings.Builder
	yes := "No"
	if spam {
		yes = "Yes"
		h.WriteString("X-Spam: Yes\r\n")
	}
	fmt.Fprintf(&h, "X-Spam-Status: %s, score=%.2f required=%.2f\r\n", yes, rep.Score, rep.RequiredScore)
	fmt.Fprintf(&h, "X-Spam-Score: %.2f\r\n", rep.Score)
	if len(v.Symbols) > 0 {
		h.WriteString("X-Spam-Symbols:")
		line := len("X-Spam-Symbols:")
		for i, s := range v.Symbols {
			sep := " "
			if i > 0 {
				sep = ", "
			}
			if line+len(sep)+len(s) > 76 {
				h.WriteString(",\r\n\t")
				line, sep = 1, ""
			}
			h.WriteString(sep + s)
			line += len(sep) + len(s)
		}
		h.WriteString("\r\n")
	}
	v.Headers = []byte(h.String())
	return v
}

// symbolName reports whether name is a plausible rspamd symbol, safe to
// write into a header field.
func symbolName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, c := range name {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// headerSafe drops what cannot go into an HTTP header value.
func headerSafe(v string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, v)
}
