// Package backuptest runs a real S3-compatible server (versitygw) on
// loopback for tests of backups to S3 targets.
package backuptest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Credentials of the test server's root account.
const (
	AccessKey = "backuptestaccess"
	SecretKey = "backuptestsecret0123456789"
)

// S3 is a running versitygw serving one empty bucket over plain HTTP.
type S3 struct {
	Endpoint string // host:port on 127.0.0.1
	Bucket   string
	// Root is the directory holding the stored objects, so tests can
	// scan what reached the server.
	Root string
}

// Binary returns the versitygw binary: $MAILCLUSTER_VERSITYGW, else
// $(go env GOPATH)/bin/versitygw, else versitygw on $PATH; "" if none.
func Binary() string {
	if p := os.Getenv("MAILCLUSTER_VERSITYGW"); p != "" {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	return ""
}

// StartS3 starts versitygw on a free loopback port with a fresh bucket;
// t.Cleanup stops it. Without the binary the test is skipped, unless
// MAILCLUSTER_REQUIRE_S3 is set (as in CI), where it fails.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("MAILCLUSTER_REQUIRE_S3") != "" {
			t.Fatal("versitygw not found (set MAILCLUSTER_VERSITYGW or install it into $(go env GOPATH)/bin) and MAILCLUSTER_REQUIRE_S3 is set")
		}
		t.Skip("versitygw not found; set MAILCLUSTER_VERSITYGW to run the S3 tests")
	}
	root := t.TempDir()
	for attempt := 0; ; attempt++ {
		addr, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		cmd := exec.Command(bin, "--access", AccessKey, "--secret", SecretKey, "--port", addr, "--quiet", "posix", root)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatalf("start versitygw: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if err := waitTCP(addr, exited, 20*time.Second); err != nil {
			cmd.Process.Kill()
			<-exited
			if attempt < 2 { // another process may have taken the port
				continue
			}
			t.Fatalf("versitygw did not come up: %v\n%s", err, logs.String())
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		s := &S3{Endpoint: addr, Bucket: "backups", Root: root}
		cl, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(AccessKey, SecretKey, "")})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := cl.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{}); err != nil {
			t.Fatalf("make bucket: %v", err)
		}
		return s
	}
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitTCP(addr string, exited <-chan error, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond) // polling interval while the server starts
	}
	return fmt.Errorf("no listener on %s after %s", addr, within)
}
