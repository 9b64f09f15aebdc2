package cluster

import (
	"bytes"
	"context"
	"encoding/gob"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestQueryAnswerEncodings: a node asks for raftstore's encoding of a
// query answer and reads either that or gob, so nodes before and after
// the change answer each other during a rolling upgrade.
func TestQueryAnswerEncodings(t *testing.T) {
	want := &raftstore.QueryResult{
		Index:    42,
		Mailbox:  schema.MailboxRecord{ID: schema.ID{1}, Sealed: []byte("name"), UIDValidity: 7, UIDNext: 3, Messages: 2},
		Messages: []schema.MessageRecord{{UID: 1, Blob: schema.ID{2}, Size: 10, Sealed: []byte("flags")}, {UID: 2, Blob: schema.ID{3}, Size: 20, Sealed: []byte("more")}},
		Chunks:   [][]byte{bytes.Repeat([]byte("sealed chunk "), 20_000)},
	}
	current := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeQueryResult(w, r, want) }))
	defer current.Close()
	before := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// What a node from before the encoding answers, whatever is asked.
		gob.NewEncoder(w).Encode(want)
	}))
	defer before.Close()

	for _, tc := range []struct {
		name, url, accept, wantType string
	}{
		{"current node asked by a current node", current.URL, queryResultType, queryResultType},
		{"current node asked by a node from before", current.URL, "", ""},
		{"node from before asked by a current node", before.URL, queryResultType, ""},
	} {
		req, err := http.NewRequest(http.MethodPost, tc.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.accept != "" {
			req.Header.Set("Accept", tc.accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		isOurs := resp.Header.Get("Content-Type") == queryResultType
		got, err := readQueryResult(resp)
		closeBody(resp.Body)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if isOurs != (tc.wantType == queryResultType) {
			t.Errorf("%s: answered in raftstore's encoding: %v", tc.name, isOurs)
		}
		// gob leaves empty slices nil, which the records' codec keeps
		// too for these values.
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decoded %+v, want %+v", tc.name, got, want)
		}
	}
}

// TestQueryRequestEncodings: a node sends a query in raftstore's encoding
// only to a node that answered in it before, and goes back to gob for a
// node that refuses it (one rolled back to a version from before).
func TestQueryRequestEncodings(t *testing.T) {
	want := &raftstore.QueryResult{Index: 7, Chunks: [][]byte{[]byte("header")}}
	query := raftstore.Query{Kind: raftstore.QueryHeader, User: schema.ID{1}, Blob: schema.ID{2}}
	var rolledBack atomic.Bool
	var mu sync.Mutex
	var seen []string // the encoding of each query the server got
	saw := func(how string) {
		mu.Lock()
		seen = append(seen, how)
		mu.Unlock()
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rolledBack.Load() {
			// A node from before: gob in, gob out.
			var req queryRequest
			if err := gob.NewDecoder(r.Body).Decode(&req); err != nil {
				saw("refused")
				http.Error(w, "bad query", http.StatusBadRequest)
				return
			}
			saw("gob")
			gob.NewEncoder(w).Encode(want)
			return
		}
		req, err := readQueryRequest(w, r)
		if err != nil {
			t.Errorf("read query: %v", err)
			http.Error(w, "bad query", http.StatusBadRequest)
			return
		}
		if !reflect.DeepEqual(req.Query, query) || req.MinIndex != 5 {
			t.Errorf("query read as %+v at %d", req.Query, req.MinIndex)
		}
		if r.Header.Get("Content-Type") == queryRequestType {
			saw("encoded")
		} else {
			saw("gob")
		}
		writeQueryResult(w, r, want)
	}))
	defer srv.Close()
	rc := &rpcClient{http: srv.Client()}
	addr := srv.Listener.Addr().String()
	ask := func() {
		t.Helper()
		got, err := rc.query(context.Background(), addr, 1, query, 5)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("answer %+v, want %+v", got, want)
		}
	}
	ask()
	ask()
	rolledBack.Store(true)
	ask()
	ask()
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(seen, " "); got != "gob encoded refused gob gob" {
		t.Errorf("queries arrived as: %s", got)
	}
}

func TestReadBody(t *testing.T) {
	payload := bytes.Repeat([]byte("chunk "), 50_000)
	for name, length := range map[string]int64{"stated length": int64(len(payload)), "chunked": -1} {
		r := httptest.NewRequest(http.MethodPost, "/rpc/apply/1", bytes.NewReader(payload))
		r.ContentLength = length
		got, err := readBody(httptest.NewRecorder(), r)
		if err != nil || !bytes.Equal(got, payload) {
			t.Errorf("%s: read %d bytes, %v; want the %d sent", name, len(got), err, len(payload))
		}
	}
	// A body shorter than it said is an error, not a zero-padded command.
	r := httptest.NewRequest(http.MethodPost, "/rpc/apply/1", bytes.NewReader(payload[:10]))
	r.ContentLength = 100
	if got, err := readBody(httptest.NewRecorder(), r); err == nil {
		t.Errorf("short body read as %d bytes without error", len(got))
	}
}
