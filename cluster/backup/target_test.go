package backup

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseTargetFlag(t *testing.T) {
	tests := []struct {
		in      string
		want    TargetConfig
		wantErr string
	}{
		{in: "eu=file:///srv/backups", want: TargetConfig{Region: "eu", URL: "file:///srv/backups"}},
		{in: "us-east=s3://bucket/mail/prefix?endpoint=127.0.0.1:7070&region=us-east-1&insecure=true&path_style=1",
			want: TargetConfig{Region: "us-east", URL: "s3://bucket/mail/prefix", Endpoint: "127.0.0.1:7070", S3Region: "us-east-1", Insecure: true, PathStyle: true}},
		{in: "ap=s3://bucket", want: TargetConfig{Region: "ap", URL: "s3://bucket"}},
		{in: "file:///srv", wantErr: "want REGION=URL"},
		{in: "=file:///srv", wantErr: "want REGION=URL"},
		{in: "eu west=file:///srv", wantErr: "region label"},
		{in: "eu=file://relative/path", wantErr: "not a host"},
		{in: "eu=file:///", wantErr: "absolute directory other than /"},
		{in: "eu=ftp://host/x", wantErr: "unsupported URL scheme"},
		{in: "eu=s3:///prefix", wantErr: "needs a bucket"},
		{in: "eu=s3://AKIA:secret@bucket/x", wantErr: "credentials do not belong in the URL"},
		{in: "eu=s3://bucket/x?secret_key=abc", wantErr: "credentials do not belong in the URL"},
		{in: "eu=s3://bucket/x?insecure=maybe", wantErr: "not a boolean"},
		{in: "eu=s3://bucket/x?colour=blue", wantErr: "unknown option"},
		{in: "eu=s3://bucket/../x", wantErr: "'..'"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTargetFlag(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "secret") && strings.Contains(err.Error(), "abc") {
					t.Fatalf("error repeats the secret: %v", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestOpenTargetsRejectsDuplicateRegions(t *testing.T) {
	dir := t.TempDir()
	_, err := OpenTargets([]TargetConfig{{Region: "eu", URL: "file://" + dir + "/a"}, {Region: "eu", URL: "file://" + dir + "/b"}})
	if err == nil || !strings.Contains(err.Error(), "used twice") {
		t.Fatalf("duplicate regions: %v", err)
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("runner without targets")
	}
}

// testTargetContract runs the behaviour every Target must have.
func testTargetContract(t *testing.T, tg Target) {
	ctx := testCtx(t)
	if _, err := tg.Get(ctx, "20260101T000000.000Z-00000000/manifest.json"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of a missing object: %v", err)
	}
	if objs, err := tg.List(ctx, ""); err != nil || len(objs) != 0 {
		t.Fatalf("list of an empty target: %v, %v", objs, err)
	}
	mustPut(t, tg, "a/one", "first")
	mustPut(t, tg, "a/two", "second!")
	mustPut(t, tg, "b/three", "3")
	mustPut(t, tg, "a/one", "replaced")
	rc, err := tg.Get(ctx, "a/one")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "replaced" {
		t.Fatalf("get returned %q", b)
	}
	objs, err := tg.List(ctx, "a/")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
		if o.Key == "a/two" && o.Size != 7 {
			t.Fatalf("size of a/two is %d", o.Size)
		}
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"a/one", "a/two"}) {
		t.Fatalf("list a/: %v", keys)
	}
	// A reader that fails part way must not leave an object behind.
	err = tg.Put(ctx, "a/broken", &brokenReader{r: strings.NewReader(strings.Repeat("x", 1000)), left: 10}, 1000)
	if err == nil {
		t.Fatal("put from a failing reader succeeded")
	}
	if _, err := tg.Get(ctx, "a/broken"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a failed put left an object: %v", err)
	}
	// A reader shorter than the announced size must fail too.
	if err := tg.Put(ctx, "a/short", strings.NewReader("abc"), 10); err == nil {
		t.Fatal("short put succeeded")
	}
	for _, k := range []string{"a/one", "a/two", "b/three", "a/one"} {
		if err := tg.Delete(ctx, k); err != nil {
			t.Fatalf("delete %s: %v", k, err)
		}
	}
	if objs, err := tg.List(ctx, ""); err != nil || len(objs) != 0 {
		t.Fatalf("list after deleting everything: %v, %v", objs, err)
	}
	for _, bad := range []string{"", "/abs", "a/../b", "a//b", "a/./b", "a/b/", "sp ace", `back\slash`} {
		if err := tg.Put(ctx, bad, strings.NewReader("x"), 1); err == nil {
			t.Errorf("put accepted key %q", bad)
		}
	}
}

func TestFileTarget(t *testing.T) {
	root := filepath.Join(t.TempDir(), "backups")
	tg, err := OpenTarget(TargetConfig{Region: "eu", URL: "file://" + root})
	if err != nil {
		t.Fatal(err)
	}
	if tg.Region() != "eu" || tg.String() != "file://"+root {
		t.Fatalf("target %s %s", tg.Region(), tg)
	}
	testTargetContract(t, tg)
	mustPut(t, tg, "x/y", "z")
	info, err := os.Stat(filepath.Join(root, "x", "y"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("object file mode %v, %v", info.Mode(), err)
	}
	if err := tg.Delete(testCtx(t), "x/y"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "x")); !os.IsNotExist(err) {
		t.Fatal("delete left an empty directory")
	}
}

func TestS3Target(t *testing.T) {
	s3 := startS3(t)
	testTargetContract(t, s3.target(t, "us", "some/prefix"))
	// Two prefixes in one bucket do not see each other.
	a, b := s3.target(t, "a", "one"), s3.target(t, "b", "two")
	mustPut(t, a, "k", "v")
	if objs, err := b.List(testCtx(t), ""); err != nil || len(objs) != 0 {
		t.Fatalf("prefix two sees %v, %v", objs, err)
	}
	// A multipart upload (larger than one 16 MiB part) round-trips
	// byte-exact: some S3 servers mishandle minio-go's chunked signing.
	big := make([]byte, 20<<20+12345)
	rand.Read(big)
	if err := a.Put(testCtx(t), "big", bytes.NewReader(big), int64(len(big))); err != nil {
		t.Fatal(err)
	}
	rc, err := a.Get(testCtx(t), "big")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("multipart object came back as %d bytes (want %d), %v", len(got), len(big), err)
	}
	// The secret may come from a file.
	withFile := s3.config("d", "one")
	withFile.SecretKeyFile = filepath.Join(t.TempDir(), "secret")
	os.WriteFile(withFile.SecretKeyFile, []byte(withFile.SecretKey+"\n"), 0o600)
	withFile.SecretKey = ""
	fromFile, err := OpenTarget(withFile)
	if err != nil {
		t.Fatal(err)
	}
	if objs, err := fromFile.List(testCtx(t), ""); err != nil || len(objs) != 2 {
		t.Fatalf("list with the secret from a file: %v, %v", objs, err)
	}
	// Wrong credentials give a clear error.
	cfg := s3.config("c", "x")
	cfg.SecretKey = "wrong-secret-key-123"
	bad, err := OpenTarget(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Put(testCtx(t), "k", strings.NewReader("v"), 1); err == nil || strings.Contains(err.Error(), "wrong-secret") {
		t.Fatalf("put with a wrong secret: %v", err)
	}
}
