package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.etcd.io/bbolt"
)

// CopyStateWithout copies the state file at src (a copy written by
// WriteState) to a new file at dst without the settings whose keys start
// with prefix. The copy is rebuilt key by key, not page by page, so the
// dropped settings leave nothing behind in free pages either: a backup
// made from dst does not carry them, not even as deleted bytes. dst keeps
// src's applied index and term. It returns what dst holds.
func CopyStateWithout(src, dst, prefix string) (info StateInfo, err error) {
	if prefix == "" {
		return info, errors.New("copy state: empty settings prefix")
	}
	if err := checkState(src); err != nil {
		return info, err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("state file corrupt: %v", r)
		}
	}()
	in, err := bbolt.Open(src, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return info, fmt.Errorf("open state file: %w", err)
	}
	defer in.Close()
	if _, err := os.Stat(dst); err == nil {
		return info, fmt.Errorf("copy state: %s exists", dst)
	}
	out, err := bbolt.Open(dst, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return info, fmt.Errorf("create state copy: %w", err)
	}
	defer out.Close()
	skip := func(path [][]byte, k []byte) bool {
		return len(path) == 1 && bytes.Equal(path[0], bucketSettings) && strings.HasPrefix(string(k), prefix)
	}
	err = in.View(func(rtx *bbolt.Tx) error {
		return out.Update(func(wtx *bbolt.Tx) error {
			return rtx.ForEach(func(name []byte, b *bbolt.Bucket) error {
				nb, err := wtx.CreateBucket(name)
				if err != nil {
					return err
				}
				return copyBucket(b, nb, [][]byte{name}, skip)
			})
		})
	})
	if err != nil {
		return info, fmt.Errorf("copy state: %w", err)
	}
	if err := out.Sync(); err != nil {
		return info, err
	}
	if err := out.Close(); err != nil {
		return info, err
	}
	return InspectStateFile(dst)
}

// copyBucket copies every key, nested bucket and the sequence of src into
// dst, except the keys skip names.
func copyBucket(src, dst *bbolt.Bucket, path [][]byte, skip func([][]byte, []byte) bool) error {
	if err := dst.SetSequence(src.Sequence()); err != nil {
		return err
	}
	return src.ForEach(func(k, v []byte) error {
		if v == nil {
			child, err := dst.CreateBucket(k)
			if err != nil {
				return err
			}
			return copyBucket(src.Bucket(k), child, append(path[:len(path):len(path)], k), skip)
		}
		if skip(path, k) {
			return nil
		}
		return dst.Put(k, v)
	})
}

// PutStateSettings writes settings into the state file at path (a
// restored copy, before InstallState makes it a replica): the key store
// that backups keep apart goes back into a restored meta shard this way.
// An empty value deletes the setting.
func PutStateSettings(path string, settings map[string][]byte) (err error) {
	if err := checkState(path); err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("state file corrupt: %v", r)
		}
	}()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("open state file: %w", err)
	}
	defer db.Close()
	err = db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketSettings)
		if b == nil {
			return errors.New("state file has no settings")
		}
		for k, v := range settings {
			if len(k) == 0 {
				return errors.New("empty setting key")
			}
			if len(v) == 0 {
				if err := b.Delete([]byte(k)); err != nil {
					return err
				}
				continue
			}
			if err := b.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("put settings: %w", err)
	}
	return db.Close()
}

// StateSettings returns the settings of the state file at path whose keys
// start with prefix.
func StateSettings(path, prefix string) (out map[string][]byte, err error) {
	if err := checkState(path); err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("state file corrupt: %v", r)
		}
	}()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open state file: %w", err)
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		out = (&Reader{tx: tx}).Settings(prefix)
		return nil
	})
	return out, err
}
