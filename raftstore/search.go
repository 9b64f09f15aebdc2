package raftstore

import (
	"bytes"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Search records: a message's sealed search record (built and sealed by
// the node that proposes the append, opaque here) lives in the user's
// "search" bucket under its blob id, so copies share it like the blob,
// and it is deleted with the blob's last reference. The bucket is
// created with the first record, so users and shards from before search
// records need no migration; messages without a record are searched by
// reading them.

// ubSearch is the user sub-bucket of search records: blob id -> sealed
// record.
var ubSearch = []byte("search")

// maxSearchRecordsPerQuery bounds the blobs of one QuerySearchRecords.
const maxSearchRecordsPerQuery = 4096

// putSearchRecord stores the sealed search record of a blob.
func (u *userMail) putSearchRecord(blob schema.ID, sealed []byte) {
	b, err := u.b.CreateBucketIfNotExists(ubSearch)
	must(err)
	must(b.Put(blob[:], sealed))
}

// deleteSearchRecord drops the search record of a blob, if any.
func (u *userMail) deleteSearchRecord(blob schema.ID) {
	if b := u.b.Bucket(ubSearch); b != nil {
		must(b.Delete(blob[:]))
	}
}

// SearchRecords returns the sealed search records of a user's blobs, in
// order, nil for a blob without one (stored before search records
// existed, or gone).
func (r *Reader) SearchRecords(user schema.ID, blobs []schema.ID) ([][]byte, error) {
	u, err := r.userMail(user)
	if err != nil {
		return nil, err
	}
	if len(blobs) > maxSearchRecordsPerQuery {
		return nil, schema.ErrInvalid
	}
	out := make([][]byte, len(blobs))
	b := u.b.Bucket(ubSearch)
	if b == nil {
		return out, nil
	}
	for i, id := range blobs {
		if v := b.Get(id[:]); v != nil {
			out[i] = bytes.Clone(v)
		}
	}
	return out, nil
}
