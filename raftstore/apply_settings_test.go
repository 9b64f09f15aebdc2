package raftstore

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestPutSettings(t *testing.T) {
	s := openShard(t, t.TempDir())
	apply(t, s, &schema.PutSetting{Key: "deliveries/u/2", Value: []byte("old")})
	apply(t, s, &schema.PutSettings{Settings: []schema.PutSetting{
		{Key: "deliveries/u/1", Value: []byte("one")},
		{Key: "deliveries/u/2"}, // an empty value deletes
		{Key: "deliveries/u/3", Value: []byte("three")},
	}})
	want := map[string]string{"deliveries/u/1": "one", "deliveries/u/3": "three"}
	check := func() {
		t.Helper()
		_ = s.View(func(r *Reader) error {
			got := r.Settings("deliveries/")
			if len(got) != len(want) {
				t.Errorf("settings %q, want %q", got, want)
			}
			for k, v := range want {
				if string(got[k]) != v {
					t.Errorf("setting %s = %q, want %q", k, got[k], v)
				}
			}
			return nil
		})
	}
	check()

	// One invalid key refuses the whole command: nothing is stored.
	for _, bad := range [][]schema.PutSetting{
		{{Key: "deliveries/u/4", Value: []byte("x")}, {Key: "", Value: []byte("y")}},
		{{Key: "deliveries/u/5", Value: []byte("x")}, {Key: strings.Repeat("k", 40000), Value: []byte("y")}},
		nil,
		make([]schema.PutSetting, schema.MaxBatchSettings+1),
	} {
		if _, err := applyErr(s, schema.NewID(), &schema.PutSettings{Settings: bad}); !errors.Is(err, schema.ErrInvalid) {
			t.Fatalf("%d settings with an invalid one: %v, want ErrInvalid", len(bad), err)
		}
	}
	check()
}
