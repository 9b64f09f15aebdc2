package schema

import (
	"bytes"
	"sync"
	"testing"
)

// TestRequestIDsFollowEachOther checks what the request table's locality
// rests on: the ids one process makes sort in the order they were made
// (also when goroutines make them at once), none repeats and none is
// zero (a zero id is not remembered at all).
func TestRequestIDsFollowEachOther(t *testing.T) {
	const goroutines, each = 4, 1000
	made := make([][]ID, goroutines)
	var wg sync.WaitGroup
	for g := range made {
		wg.Go(func() {
			for range each {
				made[g] = append(made[g], NewRequestID())
			}
		})
	}
	wg.Wait()
	seen := map[ID]bool{}
	for _, ids := range made {
		for i, id := range ids {
			if id.IsZero() || seen[id] {
				t.Fatalf("request id %s is zero or made twice", id)
			}
			seen[id] = true
			if i > 0 && bytes.Compare(ids[i-1][:], id[:]) >= 0 {
				t.Fatalf("request id %s made after %s sorts before it", id, ids[i-1])
			}
			if !bytes.Equal(id[:8], made[0][0][:8]) {
				t.Fatalf("request ids %s and %s of one process differ in their first half", id, made[0][0])
			}
		}
	}
}
