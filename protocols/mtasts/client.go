package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of a Client.
const (
	// DefaultFetchTimeout bounds one policy fetch, connection to body.
	DefaultFetchTimeout = 30 * time.Second
	// DefaultRecheck is how long a cached policy is used without looking
	// at the TXT record again.
	DefaultRecheck = 5 * time.Minute
	// defaultCacheEntries bounds the cached policies.
	defaultCacheEntries = 10000
)

// Config configures a Client.
type Config struct {
	// Resolver looks up _mta-sts TXT records and the policy hosts'
	// addresses; nil means net.DefaultResolver.
	Resolver *net.Resolver
	// RootCAs verifies the policy hosts' certificates; nil means the
	// system's roots.
	RootCAs *x509.CertPool
	// Port is the HTTPS port of policy hosts (443 unless set; tests and
	// staging set another).
	Port int
	// FetchTimeout bounds one fetch (DefaultFetchTimeout when zero).
	FetchTimeout time.Duration
	// Recheck is how long a cached policy is used before the TXT record
	// is looked at again (DefaultRecheck when zero).
	Recheck time.Duration
	// MaxEntries bounds the cache (10000 when zero).
	MaxEntries int
	// Now is the cache's clock; nil means time.Now.
	Now func() time.Time
}

// Client looks up, fetches and caches the MTA-STS policies of the
// domains mail is sent to. It is safe for concurrent use.
type Client struct {
	cfg  Config
	http *http.Client

	mu    sync.Mutex
	cache map[string]*entry
}

// entry is a cached policy.
type entry struct {
	policy  *Policy
	expires time.Time // fetched plus max_age
	checked time.Time // when the TXT record last said this id
}

// New returns a client.
func New(cfg Config) *Client {
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Port == 0 {
		cfg.Port = 443
	}
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	if cfg.Recheck == 0 {
		cfg.Recheck = DefaultRecheck
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = defaultCacheEntries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	dialer := &net.Dialer{Resolver: cfg.Resolver, Timeout: cfg.FetchTimeout}
	port := strconv.Itoa(cfg.Port)
	transport := &http.Transport{
		// Every fetch dials mta-sts.DOMAIN through the configured
		// resolver, on the configured port.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return dialer.DialContext(ctx, network, net.JoinHostPort(host, port))
		},
		TLSClientConfig:       &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   cfg.FetchTimeout,
		ResponseHeaderTimeout: cfg.FetchTimeout,
		MaxIdleConns:          10,
		IdleConnTimeout:       30 * time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     true,
	}
	return &Client{
		cfg: cfg,
		http: &http.Client{
			Transport: transport,
			Timeout:   cfg.FetchTimeout,
			// RFC 8461 section 3.3: redirects must not be followed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		cache: map[string]*entry{},
	}
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Lookup returns the MTA-STS policy of a recipient domain, or nil when
// it has none. A cached policy is used until its max_age ends, and
// fetched again when the _mta-sts TXT record names another id; a failed
// refresh keeps the cached policy (RFC 8461 section 5.1). When there is
// no valid policy and something failed on the way (DNS, HTTPS, a
// malformed policy) the error says what, and the policy is nil: the
// caller delivers as if the domain had none, and may report the failure
// (TLS-RPT).
func (c *Client) Lookup(ctx context.Context, domain string) (*Policy, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if domain == "" || len(domain) > 253 {
		return nil, fmt.Errorf("%w: domain %q", ErrInvalid, domain)
	}
	now := c.cfg.Now()
	cached := c.cached(domain, now)
	if cached != nil && now.Sub(cached.checked) < c.cfg.Recheck {
		return cached.policy, nil
	}
	id, txtErr := c.lookupRecord(ctx, domain)
	if txtErr != nil {
		// No record (or DNS failed): a cached policy still holds.
		if cached != nil {
			return cached.policy, nil
		}
		var dnsErr *net.DNSError
		if errors.As(txtErr, &dnsErr) && dnsErr.IsNotFound {
			return nil, nil
		}
		if errors.Is(txtErr, errNoRecord) {
			return nil, nil
		}
		return nil, txtErr
	}
	if cached != nil && cached.policy.ID == id {
		c.touch(domain, now)
		return cached.policy, nil
	}
	p, err := c.Fetch(ctx, domain)
	if err != nil {
		if cached != nil {
			return cached.policy, nil
		}
		return nil, err
	}
	p.ID = id
	c.store(domain, p, now)
	return p, nil
}

// errNoRecord: the domain has no _mta-sts TXT record starting v=STSv1.
var errNoRecord = errors.New("mta-sts: no _mta-sts record")

// lookupRecord returns the id of a domain's _mta-sts TXT record.
func (c *Client) lookupRecord(ctx context.Context, domain string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.FetchTimeout)
	defer cancel()
	txts, err := c.cfg.Resolver.LookupTXT(ctx, "_mta-sts."+domain)
	if err != nil {
		return "", fmt.Errorf("mta-sts: look up _mta-sts.%s: %w", domain, err)
	}
	// RFC 8461 section 3.1: records not starting with "v=STSv1;" are
	// discarded; anything but exactly one left means no policy.
	var sts []string
	for _, t := range txts {
		if rest, ok := strings.CutPrefix(t, "v=STSv1"); ok && strings.HasPrefix(strings.TrimLeft(rest, " \t"), ";") {
			sts = append(sts, t)
		}
	}
	if len(sts) == 0 {
		return "", errNoRecord
	}
	if len(sts) > 1 {
		return "", fmt.Errorf("%w: %d _mta-sts records", ErrInvalid, len(sts))
	}
	return ParseRecord(sts[0])
}

// Fetch fetches and parses a domain's policy from
// https://mta-sts.DOMAIN/.well-known/mta-sts.txt: a 200 answer of type
// text/plain, at most MaxPolicySize bytes, over HTTPS with a valid
// certificate, redirects not followed.
func (c *Client) Fetch(ctx context.Context, domain string) (*Policy, error) {
	url := "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
	ctx, cancel := context.WithTimeout(ctx, c.cfg.FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("mta-sts: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("mta-sts: fetch policy of %s: %w", domain, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("mta-sts: fetch policy of %s: HTTP status %d", domain, resp.StatusCode)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return nil, fmt.Errorf("mta-sts: policy of %s has media type %q, want text/plain", domain, resp.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("mta-sts: read policy of %s: %w", domain, err)
	}
	p, err := Parse(body)
	if err != nil {
		return nil, fmt.Errorf("policy of %s: %w", domain, err)
	}
	return p, nil
}

func (c *Client) cached(domain string, now time.Time) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.cache[domain]
	if e == nil || !now.Before(e.expires) {
		delete(c.cache, domain)
		return nil
	}
	cp := *e
	return &cp
}

func (c *Client) touch(domain string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.cache[domain]; e != nil {
		e.checked = now
	}
}

func (c *Client) store(domain string, p *Policy, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cache) >= c.cfg.MaxEntries {
		for d, e := range c.cache {
			if !now.Before(e.expires) {
				delete(c.cache, d)
			}
		}
		if len(c.cache) >= c.cfg.MaxEntries {
			clear(c.cache)
		}
	}
	c.cache[domain] = &entry{policy: p, expires: now.Add(p.MaxAge), checked: now}
}
