package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/mailcluster/mailcluster/node/mailexport"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// pathExport is the admin endpoint that exports a user's data.
const pathExport = "/v1/export"

// exportChunk is how many archive bytes one event carries (64 KiB of
// base64), far below the event size the client accepts.
const exportChunk = 48 << 10

const exportUsage = `
Exporting a user's data:
  mailnode user export --data DIR ADDRESS --to FILE [--format mbox|maildir]
    writes everything held about the user into FILE, a tar archive (not
    compressed: gzip it if you like) with mode 0600: every mailbox as
    mbox (default) or as a Maildir++ tree, with flags, keywords, internal
    dates and subscriptions, and account.json (address, created, MFA,
    app passwords by name, aliases and catch-alls that deliver to the
    user, recorded logins; never a password hash or secret). The node reads the mail and
    streams the archive; FILE.partial holds it until it is complete, so an
    interrupted export leaves nothing under FILE's name. FILE must not
    exist. An mbox file of the archive goes back in with
    mailnode import mbox FILE --to USER/MAILBOX, a Maildir tree with
    mailnode import maildir.
`

// exportRequest is what the CLI asks the node to export.
type exportRequest struct {
	Address string `json:"address"`
	Format  string `json:"format"`
}

// exportEvent is one line of an export's stream: a progress line, the
// archive's next bytes, a rewrite of bytes already sent, then the result
// or the error.
type exportEvent struct {
	Progress string `json:"progress,omitempty"`
	Done     bool   `json:"done,omitempty"`
	// Data are archive bytes: the next ones, or with At the ones to
	// write at that offset over bytes already sent (the header of an
	// mbox file, rewritten once its size is known).
	Data   []byte          `json:"data,omitempty"`
	At     *int64          `json:"at,omitempty"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// exportStream sends events to the admin client. It is the export's
// mailexport.Sink: it gathers archive bytes into chunks, and rewrites
// bytes still in its buffer there.
type exportStream struct {
	w       io.Writer
	buf     []byte
	flushed int64 // archive bytes sent
}

func (s *exportStream) send(ev exportEvent) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode export event: %w", err)
	}
	if _, err := s.w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("send export event: %w", err)
	}
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

func (s *exportStream) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	if err := s.send(exportEvent{Data: s.buf}); err != nil {
		return err
	}
	s.flushed += int64(len(s.buf))
	s.buf = s.buf[:0]
	return nil
}

// Write adds archive bytes.
func (s *exportStream) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), exportChunk-len(s.buf))
		s.buf = append(s.buf, p[:k]...)
		p = p[k:]
		if len(s.buf) == exportChunk {
			if err := s.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// WriteAt rewrites archive bytes already written.
func (s *exportStream) WriteAt(p []byte, off int64) (int, error) {
	if end := s.flushed + int64(len(s.buf)); off < 0 || off+int64(len(p)) > end {
		return 0, fmt.Errorf("rewrite of archive bytes %d-%d: only %d written", off, off+int64(len(p)), end)
	}
	if off >= s.flushed {
		copy(s.buf[off-s.flushed:], p)
		return len(p), nil
	}
	if err := s.flush(); err != nil {
		return 0, err
	}
	if err := s.send(exportEvent{Data: p, At: &off}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// exportAdmin serves the export endpoint and passes everything else to
// next.
func (n *Node) exportAdmin(next http.Handler, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+pathExport, func(w http.ResponseWriter, r *http.Request) {
		var req exportRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, maxImportRequest))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeBackupError(w, http.StatusBadRequest, fmt.Errorf("bad export request: %v", err))
			return
		}
		start := time.Now()
		ctx := r.Context()
		src, opts, err := n.openExport(ctx, req)
		if err != nil {
			status := http.StatusInternalServerError
			if errors.Is(err, schema.ErrInvalid) {
				status = http.StatusBadRequest
			} else if errors.Is(err, schema.ErrNoSuchUser) {
				status = http.StatusNotFound
			}
			writeBackupError(w, status, err)
			log.Info("admin request", "route", r.Pattern, "ok", false)
			log.Debug("export refused", "address", req.Address, "err", err)
			return
		}
		defer src.Close()
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		s := &exportStream{w: w, buf: make([]byte, 0, exportChunk)}
		if r.URL.Query().Get("progress") == "1" {
			opts.Progress = exportProgress(s)
		}
		sum, err := mailexport.Run(ctx, src, s, opts)
		if err == nil {
			err = s.flush()
		}
		ev := exportEvent{}
		if err == nil {
			ev.Result, err = json.Marshal(sum)
		}
		if err != nil {
			ev.Error = err.Error()
		}
		// A failed send means the client went away: nobody to tell.
		_ = s.send(ev)
		// The user stays out of the log (addresses only at debug level),
		// and so does anything of the mail.
		log.Info("admin request", "route", r.Pattern, "format", sum.Format, "ok", err == nil,
			"mailboxes", sum.Mailboxes, "messages", sum.Messages, "bytes", sum.Bytes, "duration", time.Since(start).Round(time.Millisecond))
		log.Debug("user exported", "address", req.Address, "ok", err == nil)
	})
	mux.Handle("/", next)
	return mux
}

// openExport opens the user's account (without a password: the admin
// socket is the node owner's) and gathers what the directory holds about
// the user for account.json: the account, app passwords, the aliases
// and catch-alls that deliver to the user, the login history and the
// delivery records.
func (n *Node) openExport(ctx context.Context, req exportRequest) (*closingSource, mailexport.Options, error) {
	var opts mailexport.Options
	switch req.Format {
	case "", mailexport.FormatMbox, mailexport.FormatMaildir:
		opts.Format = req.Format
	default:
		return nil, opts, fmt.Errorf("export format %q: want mbox or maildir: %w", req.Format, schema.ErrInvalid)
	}
	if n.store == nil || n.directory == nil {
		return nil, opts, errors.New("the node is not serving yet")
	}
	u, err := n.directory.User(ctx, req.Address)
	if err != nil {
		return nil, opts, err
	}
	apps, err := n.directory.AppPasswords(ctx, u.Address)
	if err != nil {
		return nil, opts, err
	}
	routes, err := n.directory.RoutesTo(ctx, u.Address)
	if err != nil {
		return nil, opts, err
	}
	logins, err := n.directory.Logins(ctx, u.Address, time.Time{})
	if err != nil {
		return nil, opts, err
	}
	deliveries, err := n.directory.Deliveries(ctx, u.Address, time.Time{})
	if err != nil {
		return nil, opts, err
	}
	opts.Account = mailexport.AccountFile{
		Address: u.Address, Domain: u.Domain, Created: u.Created,
		MFA: u.MFA, DomainRequiresMFA: u.DomainRequiresMFA,
		AppPasswords: make([]mailexport.AppPassword, 0, len(apps)),
		Aliases:      make([]mailexport.Alias, 0, len(routes)),
		Logins:       make([]mailexport.Login, 0, len(logins)),
		Deliveries:   make([]mailexport.Delivery, 0, len(deliveries)),
	}
	for _, d := range deliveries {
		opts.Account.Deliveries = append(opts.Account.Deliveries, mailexport.Delivery{Time: d.Time, Node: d.Node, Port: d.Port,
			Direction: d.Direction, Remote: d.Remote, From: d.From, Recipients: d.Recipients, MessageID: d.MessageID,
			TLS: d.TLS, Result: d.Result, Reply: d.Reply})
	}
	for _, a := range apps {
		opts.Account.AppPasswords = append(opts.Account.AppPasswords, mailexport.AppPassword{
			Name: a.Name, Scope: a.Scope, Created: a.Created, LastUsed: a.LastUsed, LastIP: a.LastIP})
	}
	for _, r := range routes {
		opts.Account.Aliases = append(opts.Account.Aliases, mailexport.Alias{Address: r.Address, CatchAll: r.CatchAll, Direct: r.Direct})
	}
	for _, l := range logins {
		opts.Account.Logins = append(opts.Account.Logins, mailexport.Login{Time: l.Time, Node: l.Node, Protocol: l.Protocol,
			Remote: l.Remote, Credential: l.Credential, Success: l.Success})
	}
	acct, err := n.store.AccountOf(ctx, u.Address)
	if err != nil {
		return nil, opts, err
	}
	return &closingSource{acct}, opts, nil
}

// closingSource is an account to export from, closed after use.
type closingSource struct {
	mailexport.Source
}

// Close releases the account.
func (c *closingSource) Close() error {
	if cl, ok := c.Source.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// exportProgress sends a progress line at most every half second, and
// one for each finished mailbox.
func exportProgress(s *exportStream) func(mailexport.Progress) {
	var last time.Time
	return func(p mailexport.Progress) {
		if !p.MailboxFinished && time.Since(last) < 500*time.Millisecond {
			return
		}
		last = time.Now()
		line := fmt.Sprintf("export: mailbox %d/%d %s: %d messages; %d in all, %s",
			p.Done+1, p.Mailboxes, p.Mailbox, p.InMailbox, p.Messages, formatImportBytes(p.Bytes))
		if p.MailboxFinished {
			line = fmt.Sprintf("export: %d/%d mailboxes done: %d messages, %s",
				p.Done, p.Mailboxes, p.Messages, formatImportBytes(p.Bytes))
		}
		// Sent between archive chunks; a failed send shows in the next
		// write of the archive.
		_ = s.send(exportEvent{Progress: line})
	}
}

// exportCommand is "mailnode user export ADDRESS --to FILE".
func (c CLI) exportCommand(ctx context.Context, args []string) error {
	set := newFlagSet("user export")
	data := set.String("data", "", "data directory of the node")
	config := set.String("config", "", "config file")
	to := set.String("to", "", "the archive to write (a tar file)")
	format := set.String("format", mailexport.FormatMbox, "mbox or maildir")
	pos, err := parseInterleaved(set, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *to == "" {
		return fmt.Errorf("%w: user export ADDRESS --to FILE [--format mbox|maildir]", errUsage)
	}
	if *format != mailexport.FormatMbox && *format != mailexport.FormatMaildir {
		return fmt.Errorf("%w: user export --format %q: want mbox or maildir", errUsage, *format)
	}
	dir, err := dataDirArg("user export", *data, *config)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(*to); err == nil {
		return fmt.Errorf("%s already exists: remove it or name another file", *to)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	body, err := json.Marshal(exportRequest{Address: pos[0], Format: *format})
	if err != nil {
		return err
	}
	sum, err := c.receiveExport(ctx, dir, body, *to)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	fmt.Fprintf(c.Stdout, "exported %d mailboxes, %d messages (%s) as %s to %s (a tar archive of %s)\n",
		sum.Mailboxes, sum.Messages, formatImportBytes(sum.Bytes), sum.Format, *to, formatImportBytes(sum.Size))
	if sum.Vanished > 0 {
		fmt.Fprintf(c.Stdout, "%d messages or mailboxes were deleted while the export ran and are not in it\n", sum.Vanished)
	}
	if sum.KeywordsDropped > 0 {
		fmt.Fprintf(c.Stdout, "%d keywords of messages are in no Maildir file name (a Maildir folder names at most 26); --format mbox keeps them all\n", sum.KeywordsDropped)
	}
	return nil
}

// receiveExport streams the archive into path: into path.partial (mode
// 0600) until the node's result says it is complete, then renamed. On
// any failure, interruption included, the partial file is removed.
func (c CLI) receiveExport(ctx context.Context, dataDir string, body []byte, path string) (sum mailexport.Summary, err error) {
	partial := path + ".partial"
	// A leftover of an interrupted export is replaced: it is ours.
	if err := os.Remove(partial); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return sum, err
	}
	f, err := os.OpenFile(partial, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return sum, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(partial)
		}
	}()
	client := newBackupClient(dataDir)
	defer client.close()
	progress := c.progressOut()
	reqPath := pathExport
	if progress != nil {
		reqPath += "?progress=1"
	}
	resp, err := client.requestBody(ctx, http.MethodPost, reqPath, body)
	if err != nil {
		return sum, err
	}
	defer resp.Body.Close()
	var written int64
	done := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxBackupEvent)
	for !done && sc.Scan() {
		var ev exportEvent
		if err := json.Unmarshal(bytes.TrimSpace(sc.Bytes()), &ev); err != nil {
			return sum, fmt.Errorf("admin socket: %w", err)
		}
		switch {
		case ev.At != nil:
			if *ev.At < 0 || *ev.At+int64(len(ev.Data)) > written {
				return sum, fmt.Errorf("admin socket: a rewrite of bytes %d-%d of %d", *ev.At, *ev.At+int64(len(ev.Data)), written)
			}
			if _, err := f.WriteAt(ev.Data, *ev.At); err != nil {
				return sum, err
			}
		case ev.Data != nil:
			if _, err := f.Write(ev.Data); err != nil {
				return sum, err
			}
			written += int64(len(ev.Data))
		case ev.Progress != "":
			if progress != nil {
				end := ""
				if ev.Done {
					end = "\n"
				}
				fmt.Fprintf(progress, "\r\x1b[K%s%s", ev.Progress, end)
			}
		case ev.Error != "":
			return sum, errors.New(ev.Error)
		case ev.Result != nil:
			if err := json.Unmarshal(ev.Result, &sum); err != nil {
				return sum, fmt.Errorf("admin socket: %w", err)
			}
			done = true
		}
	}
	if progress != nil {
		fmt.Fprint(progress, "\r\x1b[K")
	}
	if err := sc.Err(); err != nil {
		return sum, fmt.Errorf("admin socket: %w", err)
	}
	if !done {
		return sum, errors.New("admin socket: the node closed the stream without a result (did it stop?)")
	}
	if written != sum.Size {
		return sum, fmt.Errorf("admin socket: %d archive bytes received, the node sent %d", written, sum.Size)
	}
	if err := f.Sync(); err != nil {
		return sum, err
	}
	if err := f.Close(); err != nil {
		return sum, err
	}
	if err := os.Rename(partial, path); err != nil {
		return sum, err
	}
	return sum, nil
}
