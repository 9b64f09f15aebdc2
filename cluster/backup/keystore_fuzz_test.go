package backup

import (
	"bytes"
	"testing"
)

// FuzzParseKeyStore: a decrypted key store from a target never panics
// the parser, and what it accepts holds only entries under its prefix.
func FuzzParseKeyStore(f *testing.F) {
	f.Add([]byte(`{"format":1,"cluster_id":"c","prefix":"keystore/","entries":{"keystore/a":"AQ=="}}`))
	f.Add([]byte(`{"format":1,"prefix":"keystore/","entries":{"other":"AQ=="}}`))
	f.Add([]byte(`{"format":2}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ks, err := parseKeyStore(bytes.NewReader(b), nil)
		if err != nil {
			return
		}
		for k, v := range ks.Entries {
			if len(k) < len(ks.Prefix) || k[:len(ks.Prefix)] != ks.Prefix || len(v) == 0 {
				t.Fatalf("accepted entry %q", k)
			}
		}
		var key [32]byte
		if _, err := parseKeyStore(bytes.NewReader(b), &key); err == nil && ks.MAC != ks.computeMAC(key) {
			t.Fatal("accepted a wrong MAC")
		}
	})
}
