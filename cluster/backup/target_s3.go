package backup

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Target keeps backups in a bucket of any S3-compatible store. A PUT
// (single or multipart) makes an object visible only once it is whole.
type s3Target struct {
	region   string
	endpoint string
	bucket   string
	prefix   string // "" or ending in "/"
	client   *minio.Client
}

func newS3Target(cfg TargetConfig, bucket, prefix string) (*s3Target, error) {
	endpoint := cfg.Endpoint
	secure := !cfg.Insecure
	if endpoint == "" {
		endpoint = "s3.amazonaws.com"
	}
	if strings.Contains(endpoint, "://") {
		u, err := url.Parse(endpoint)
		if err != nil {
			return nil, fmt.Errorf("backup target %s: endpoint: %w", cfg.Region, err)
		}
		switch u.Scheme {
		case "http":
			secure = false
		case "https":
			secure = true
		default:
			return nil, fmt.Errorf("backup target %s: endpoint scheme %q (want http or https)", cfg.Region, u.Scheme)
		}
		if u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("backup target %s: endpoint must not have a path; put the prefix in the s3:// URL", cfg.Region)
		}
		endpoint = u.Host
	}
	creds := credentials.NewEnvAWS()
	if cfg.AccessKey != "" {
		secret := cfg.SecretKey
		if cfg.SecretKeyFile != "" {
			b, err := readLimited(cfg.SecretKeyFile, 4096)
			if err != nil {
				return nil, fmt.Errorf("backup target %s: secret key file: %w", cfg.Region, err)
			}
			secret = strings.TrimSpace(string(b))
		}
		creds = credentials.NewStaticV4(cfg.AccessKey, secret, "")
	}
	opts := &minio.Options{Creds: creds, Secure: secure, Region: cfg.S3Region, MaxRetries: 3}
	if cfg.PathStyle {
		opts.BucketLookup = minio.BucketLookupPath
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("backup target %s: ca file: %w", cfg.Region, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("backup target %s: ca file holds no PEM certificates", cfg.Region)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		opts.Transport = tr
	}
	client, err := minio.New(endpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("backup target %s: %w", cfg.Region, err)
	}
	if prefix != "" {
		prefix += "/"
	}
	return &s3Target{region: cfg.Region, endpoint: endpoint, bucket: bucket, prefix: prefix, client: client}, nil
}

func (t *s3Target) Region() string { return t.region }

func (t *s3Target) String() string {
	return "s3://" + t.bucket + "/" + t.prefix + " at " + t.endpoint
}

func (t *s3Target) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if !validKey(key) {
		return fmt.Errorf("invalid object key %q", key)
	}
	info, err := t.client.PutObject(ctx, t.bucket, t.prefix+key, ctxReader{ctx, r}, size,
		minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if size >= 0 && info.Size != size {
		return fmt.Errorf("put %s: stored %d bytes, want %d", key, info.Size, size)
	}
	return nil
}

func (t *s3Target) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if !validKey(key) {
		return nil, fmt.Errorf("invalid object key %q", key)
	}
	obj, err := t.client.GetObject(ctx, t.bucket, t.prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, s3Err(err))
	}
	// GetObject is lazy; Stat makes a missing object fail here.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, fmt.Errorf("get %s: %w", key, s3Err(err))
	}
	return obj, nil
}

func s3Err(err error) error {
	switch minio.ToErrorResponse(err).Code {
	case minio.NoSuchKey:
		return ErrNotFound
	}
	return err
}

func (t *s3Target) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out []ObjectInfo
	for obj := range t.client.ListObjects(ctx, t.bucket, minio.ListObjectsOptions{Prefix: t.prefix + prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("list %s: %w", t, obj.Err)
		}
		key, ok := strings.CutPrefix(obj.Key, t.prefix)
		if !ok {
			continue
		}
		out = append(out, ObjectInfo{Key: key, Size: obj.Size, Modified: obj.LastModified})
	}
	return out, nil
}

func (t *s3Target) Delete(ctx context.Context, key string) error {
	if !validKey(key) {
		return fmt.Errorf("invalid object key %q", key)
	}
	err := t.client.RemoveObject(ctx, t.bucket, t.prefix+key, minio.RemoveObjectOptions{})
	if err != nil && !errors.Is(s3Err(err), ErrNotFound) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}
