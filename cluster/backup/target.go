package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// ErrNotFound is returned by Target.Get for a key that does not exist.
var ErrNotFound = errors.New("backup object not found")

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key      string // relative to the target's root
	Size     int64
	Modified time.Time
}

// Target is one place backups are kept, labelled with the region it is
// in. Keys are relative, "/"-separated paths of letters, digits, '.', '-'
// and '_'. Put must publish an object atomically: a reader never sees a
// partly written object under its final key.
type Target interface {
	// Region is the operator's label for where the target is.
	Region() string
	// String describes the location without credentials.
	String() string
	// Put stores size bytes from r under key, replacing any object there.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Get opens an object; ErrNotFound if it does not exist.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// List returns every object whose key starts with prefix.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	// Delete removes an object; deleting a missing object is not an error.
	Delete(ctx context.Context, key string) error
}

// TargetConfig configures one target.
type TargetConfig struct {
	// Region labels the target ("eu-west", "us-east"); labels are unique.
	Region string `toml:"region"`
	// URL is file:///absolute/path or s3://bucket[/prefix].
	URL string `toml:"url"`

	// Endpoint is the S3 server, host[:port] or an http(s):// URL;
	// empty means s3.amazonaws.com.
	Endpoint string `toml:"endpoint"`
	// S3Region is the bucket's S3 region ("us-east-1"); empty lets the
	// client discover it.
	S3Region string `toml:"s3_region"`
	// AccessKey and SecretKey are the S3 credentials; when both are empty
	// they come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
	AccessKey string `toml:"access_key"`
	SecretKey string `toml:"secret_key"`
	// SecretKeyFile holds the secret key instead of SecretKey.
	SecretKeyFile string `toml:"secret_key_file"`
	// Insecure uses plain HTTP (a test server or a private network).
	Insecure bool `toml:"insecure"`
	// PathStyle forces path-style bucket addressing (most non-AWS servers).
	PathStyle bool `toml:"path_style"`
	// CAFile is a PEM file of extra CAs trusted for the endpoint.
	CAFile string `toml:"ca_file"`
}

// ParseTargetFlag parses a --backup-target value, REGION=URL. S3 options
// may follow in the URL's query: endpoint, s3_region (or region),
// insecure, path_style, ca_file. Credentials are refused in URLs (they
// would show in process listings): put them in the config file or the
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables.
func ParseTargetFlag(s string) (TargetConfig, error) {
	region, raw, ok := strings.Cut(s, "=")
	if !ok || region == "" || raw == "" {
		return TargetConfig{}, fmt.Errorf("backup target %q: want REGION=URL", s)
	}
	cfg := TargetConfig{Region: region, URL: raw}
	u, err := url.Parse(raw)
	if err != nil {
		return cfg, fmt.Errorf("backup target %s: %w", region, err)
	}
	if u.User != nil {
		return cfg, fmt.Errorf("backup target %s: credentials do not belong in the URL; use the config file or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", region)
	}
	q := u.Query()
	for k, vs := range q {
		v := vs[len(vs)-1]
		switch k {
		case "endpoint":
			cfg.Endpoint = v
		case "s3_region", "region":
			cfg.S3Region = v
		case "insecure", "path_style":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return cfg, fmt.Errorf("backup target %s: %s=%q is not a boolean", region, k, v)
			}
			if k == "insecure" {
				cfg.Insecure = b
			} else {
				cfg.PathStyle = b
			}
		case "ca_file":
			cfg.CAFile = v
		case "access_key", "secret_key":
			return cfg, fmt.Errorf("backup target %s: credentials do not belong in the URL; use the config file or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", region)
		default:
			return cfg, fmt.Errorf("backup target %s: unknown option %q", region, k)
		}
	}
	u.RawQuery = ""
	cfg.URL = u.String()
	return cfg, cfg.Validate()
}

// Validate checks the configuration without touching the network.
func (c TargetConfig) Validate() error {
	if !validRegion(c.Region) {
		return fmt.Errorf("backup target: region label %q: use 1-64 letters, digits, '-' or '_'", c.Region)
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("backup target %s: %w", c.Region, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return fmt.Errorf("backup target %s: file URL must be file:///absolute/path, not a host %q", c.Region, u.Host)
		}
		if !path.IsAbs(u.Path) || path.Clean(u.Path) == "/" {
			return fmt.Errorf("backup target %s: file URL needs an absolute directory other than /", c.Region)
		}
		if c.Endpoint != "" || c.AccessKey != "" || c.SecretKey != "" || c.SecretKeyFile != "" {
			return fmt.Errorf("backup target %s: S3 options given for a file target", c.Region)
		}
	case "s3":
		if u.Host == "" {
			return fmt.Errorf("backup target %s: s3 URL needs a bucket: s3://bucket/prefix", c.Region)
		}
		if c.SecretKey != "" && c.SecretKeyFile != "" {
			return fmt.Errorf("backup target %s: give secret_key or secret_key_file, not both", c.Region)
		}
		if (c.AccessKey == "") != (c.SecretKey == "" && c.SecretKeyFile == "") {
			return fmt.Errorf("backup target %s: give both access_key and a secret key, or neither", c.Region)
		}
		if strings.Contains(u.Path, "..") {
			return fmt.Errorf("backup target %s: prefix must not contain '..'", c.Region)
		}
	default:
		return fmt.Errorf("backup target %s: unsupported URL scheme %q (want file or s3)", c.Region, u.Scheme)
	}
	return nil
}

func validRegion(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// OpenTarget returns the target cfg describes. It does not contact it.
func OpenTarget(cfg TargetConfig) (Target, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.URL)
	if u.Scheme == "file" {
		return newFileTarget(cfg.Region, path.Clean(u.Path))
	}
	return newS3Target(cfg, u.Host, strings.Trim(u.Path, "/"))
}

// OpenTargets opens every configured target and checks that region
// labels are unique.
func OpenTargets(cfgs []TargetConfig) ([]Target, error) {
	seen := map[string]bool{}
	var out []Target
	for _, c := range cfgs {
		if seen[c.Region] {
			return nil, fmt.Errorf("backup target %s: region label used twice", c.Region)
		}
		seen[c.Region] = true
		t, err := OpenTarget(c)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// validKey reports whether key is a relative path the targets accept.
func validKey(key string) bool {
	if key == "" || len(key) > 512 || strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") {
		return false
	}
	for _, part := range strings.Split(key, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
		for _, r := range part {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// ctxReader stops a long copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
