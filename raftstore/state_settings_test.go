package raftstore

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestCopyStateWithoutDropsSettingsEntirely(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	appendMsg(t, s, f, f.inbox, "kept")
	secret := bytes.Repeat([]byte("KEYSTORE-CANARY-"), 8)
	apply(t, s, &schema.PutSetting{Key: "keystore/a", Value: secret})
	apply(t, s, &schema.PutSetting{Key: "keystore/b", Value: []byte("second")})
	apply(t, s, &schema.PutSetting{Key: "other", Value: []byte("stays")})
	// A deleted key-store entry must not survive in free pages either.
	apply(t, s, &schema.PutSetting{Key: "keystore/gone", Value: secret})
	apply(t, s, &schema.PutSetting{Key: "keystore/gone"})

	dir := t.TempDir()
	raw := filepath.Join(dir, "raw.db")
	out, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.WriteState(out)
	out.Close()
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(dir, "copy.db")
	got, err := CopyStateWithout(raw, copyPath, "keystore/")
	if err != nil {
		t.Fatal(err)
	}
	if got.Index != info.Index || got.Term != info.Term || got.Stats != info.Stats {
		t.Fatalf("copy %+v, original %+v", got, info)
	}
	if rb, _ := os.ReadFile(raw); !bytes.Contains(rb, []byte("KEYSTORE-CANARY")) {
		t.Fatal("the canary is not in the original copy: the check below proves nothing")
	}
	b, err := os.ReadFile(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("KEYSTORE-CANARY")) {
		t.Fatal("a dropped setting's value is still in the copy's bytes")
	}
	if st, _ := StateSettings(copyPath, ""); string(st["other"]) != "stays" || len(st) != 1 {
		t.Fatalf("settings of the copy: %q", st)
	}
	if err := PutStateSettings(copyPath, map[string][]byte{"keystore/b": []byte("back")}); err != nil {
		t.Fatal(err)
	}
	if st, _ := StateSettings(copyPath, "keystore/"); len(st) != 1 || string(st["keystore/b"]) != "back" {
		t.Fatalf("key store after put: %q", st)
	}
	s.Close()
	inst := t.TempDir()
	if _, err := InstallState(inst, copyPath, "n1"); err != nil {
		t.Fatal(err)
	}
	r := openShard(t, inst)
	if len(messages(t, r, f.user, f.inbox)) != 1 {
		t.Fatal("restored copy lost the message")
	}
	_ = r.View(func(rd *Reader) error {
		if string(rd.Setting("keystore/b")) != "back" || rd.Setting("keystore/a") != nil {
			t.Errorf("restored settings wrong")
		}
		return nil
	})
	if _, err := CopyStateWithout(raw, copyPath, "keystore/"); err == nil {
		t.Fatal("copied over an existing file")
	}
}
