package directory

import (
	"context"
	"errors"
	"fmt"
	"testing"

	fmtlog "github.com/transparency-dev/formats/log"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/smt"
)

// rebuildMap recomputes the map from the log alone: it reads every entry up
// to the reader's latest checkpoint (whose signature it does not check),
// checks every epoch record against the map recomputed from the change
// records before it, and returns the root of the map after every change
// record read. When the checkpoint ends with an epoch record, that root is
// the epoch record's map root. It runs the replayer of startup recovery and
// of a replicated reader.
func rebuildMap(ctx context.Context, r log.Reader) ([32]byte, error) {
	raw, err := r.Checkpoint(ctx)
	if err != nil {
		return [32]byte{}, err
	}
	body, _, _ := bytesCut(raw)
	var cp fmtlog.Checkpoint
	if _, err := cp.Unmarshal(body); err != nil {
		return [32]byte{}, fmt.Errorf("directory: checkpoint: %w", err)
	}
	rp := &replayer{}
	rp.m, _ = smt.New(nil)
	for j := uint64(0); j < cp.Size; {
		es, err := r.Entries(ctx, j, cp.Size)
		if err != nil {
			return [32]byte{}, err
		}
		for _, e := range es {
			if _, err := rp.entry(j, e, true); err != nil {
				return [32]byte{}, err
			}
			j++
		}
	}
	return rp.m.Apply(rp.pending)
}

// bytesCut returns the checkpoint body (up to and including the blank
// line's first newline).
func bytesCut(raw []byte) ([]byte, []byte, bool) {
	for i := 0; i+1 < len(raw); i++ {
		if raw[i] == '\n' && raw[i+1] == '\n' {
			return raw[:i+1], raw[i+2:], true
		}
	}
	return raw, nil, false
}

// TestReplayerEpochRules: the replayer of startup recovery and of a
// replicated reader stops at the first entry that breaks an epoch rule,
// with the *api.EpochError naming it; entry 0 must be epoch record 0 of the
// empty map, as for the auditor.
func TestReplayerEpochRules(t *testing.T) {
	k := newKeys(t)
	h := newHandle(t, k, "alice@example.com")
	d := testkit.NewDevice()
	change := h.change(api.AuthEnroll, d.Sign, testkit.Set([16]byte{}, d), nil).ChangeRecord
	rec, err := api.ParseChangeRecord(change)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := smt.New(nil)
	root, err := m.Apply([]smt.Update{{Key: rec.Index, Value: api.LeafHash(change)}})
	if err != nil {
		t.Fatal(err)
	}
	epoch := func(r api.EpochRecord) []byte {
		b, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	epoch0 := epoch(api.EpochRecord{Timestamp: 100})
	for _, tc := range []struct {
		name    string
		entries [][]byte
		rule    api.Rule // "" for a valid log
		at      uint64
	}{
		{"valid", [][]byte{epoch0, change, epoch(api.EpochRecord{Epoch: 1, Timestamp: 100, LogSize: 2, MapRoot: root, MapSize: 1})}, "", 0},
		{"entry 0 is a change record", [][]byte{change}, api.RuleFirstEntry, 0},
		{"entry 0 is epoch record 1", [][]byte{epoch(api.EpochRecord{Epoch: 1})}, api.RuleFirstEntry, 0},
		{"entry 0 with a map", [][]byte{epoch(api.EpochRecord{MapRoot: root, MapSize: 1})}, api.RuleFirstEntry, 0},
		{"epoch skipped", [][]byte{epoch0, epoch(api.EpochRecord{Epoch: 2, Timestamp: 100, LogSize: 1})}, api.RuleEpochNumber, 1},
		{"wrong log size", [][]byte{epoch0, epoch(api.EpochRecord{Epoch: 1, Timestamp: 100, LogSize: 0})}, api.RuleEpochLogSize, 1},
		{"time going back", [][]byte{epoch0, epoch(api.EpochRecord{Epoch: 1, Timestamp: 99, LogSize: 1})}, api.RuleEpochTimestamp, 1},
		{"wrong map root", [][]byte{epoch0, change, epoch(api.EpochRecord{Epoch: 1, Timestamp: 100, LogSize: 2, MapSize: 1})}, api.RuleMapRoot, 2},
		{"wrong map size", [][]byte{epoch0, change, epoch(api.EpochRecord{Epoch: 1, Timestamp: 100, LogSize: 2, MapRoot: root, MapSize: 2})}, api.RuleMapSize, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := conformance.NewMemoryLog(testOrigin, k.signer)
			if _, err := l.AppendUnchecked(tc.entries); err != nil {
				t.Fatal(err)
			}
			got, err := rebuildMap(ctxT(t), l)
			if tc.rule == "" {
				if err != nil || got != root {
					t.Fatalf("rebuildMap: %x, %v; want %x", got, err, root)
				}
				return
			}
			var ee *api.EpochError
			if !errors.As(err, &ee) || ee.Rule != tc.rule || ee.Index != tc.at {
				t.Fatalf("rebuildMap: %v; want rule %q at entry %d", err, tc.rule, tc.at)
			}
		})
	}
}
