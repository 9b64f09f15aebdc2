package protocols

import (
	"context"
	"slices"
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// flagCalls is an account that records how its flags were changed; the
// other methods are not called.
type flagCalls struct {
	Account
	calls []string
}

func (f *flagCalls) StoreFlags(_ context.Context, _ schema.ID, uids []schema.UID, _ schema.FlagOp, _ []string) ([]schema.MessageInfo, error) {
	f.calls = append(f.calls, "StoreFlags")
	return nil, nil
}

func (f *flagCalls) StoreFlagsIf(_ context.Context, _ schema.ID, uids []schema.UID, _ schema.FlagOp, _ []string, _ uint64) ([]schema.MessageInfo, []schema.UID, error) {
	f.calls = append(f.calls, "StoreFlagsIf")
	return nil, nil, nil
}

// knownFlagCalls offers KnownFlagStore too.
type knownFlagCalls struct{ flagCalls }

func (k *knownFlagCalls) StoreFlagsKnown(_ context.Context, _ schema.ID, known []schema.MessageInfo, _ schema.FlagOp, _ []string, _ *uint64) ([]schema.MessageInfo, []schema.UID, error) {
	k.calls = append(k.calls, "StoreFlagsKnown")
	return nil, nil, nil
}

// TestStoreFlagsFrom: the state a session holds reaches an account that
// takes it, also through the wrapper the guard's Login returns (which
// would hide the method from a plain type assertion); other accounts
// change the flags by UID.
func TestStoreFlagsFrom(t *testing.T) {
	known := []schema.MessageInfo{{UID: 3, ModSeq: 7}}
	since := uint64(9)
	ctx := context.Background()

	k := &knownFlagCalls{}
	for _, acct := range []Account{k, guardedAccount{Account: k}} {
		if _, _, err := StoreFlagsFrom(ctx, acct, schema.ID{}, known, schema.FlagsAdd, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"StoreFlagsKnown", "StoreFlagsKnown"}; !slices.Equal(k.calls, want) {
		t.Errorf("an account with StoreFlagsKnown, bare and guarded: calls %v, want %v", k.calls, want)
	}

	f := &flagCalls{}
	for _, s := range []*uint64{nil, &since} {
		if _, _, err := StoreFlagsFrom(ctx, guardedAccount{Account: f}, schema.ID{}, known, schema.FlagsAdd, nil, s); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"StoreFlags", "StoreFlagsIf"}; !slices.Equal(f.calls, want) {
		t.Errorf("an account without it: calls %v, want %v", f.calls, want)
	}
}
