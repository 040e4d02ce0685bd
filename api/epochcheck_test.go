package api

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCheckEpochValidChain replays a valid log: epoch 0, two changes,
// epoch 1, an idle epoch 2 at the same time, and checks the chain after
// every entry.
func TestCheckEpochValidChain(t *testing.T) {
	root1, root2 := seeded32("root after one"), seeded32("root after two")
	change := &ChangeRecord{Version: 1}
	steps := []struct {
		ent       Entry
		root      [32]byte
		size      uint64
		wantChain EpochChain
	}{
		{&EpochRecord{Epoch: 0, Timestamp: 1000}, [32]byte{}, 0, EpochChain{Next: 1, Time: 1000}},
		{change, root1, 1, EpochChain{Next: 1, Time: 1000}},
		{change, root2, 2, EpochChain{Next: 1, Time: 1000}},
		{&EpochRecord{Epoch: 1, Timestamp: 2000, LogSize: 3, MapRoot: root2, MapSize: 2}, root2, 2, EpochChain{Next: 2, Time: 2000}},
		{&EpochRecord{Epoch: 2, Timestamp: 2000, LogSize: 4, MapRoot: root2, MapSize: 2}, root2, 2, EpochChain{Next: 3, Time: 2000}},
		{change, root1, 3, EpochChain{Next: 3, Time: 2000}},
	}
	var c EpochChain
	if c.Started() {
		t.Fatal("the zero chain has started")
	}
	for j, s := range steps {
		var errs []*EpochError
		c, errs = CheckEpoch(c, uint64(j), s.ent, s.root, s.size)
		if errs != nil {
			t.Fatalf("entry %d: %v", j, errs)
		}
		if c != s.wantChain {
			t.Fatalf("entry %d: chain %+v, want %+v", j, c, s.wantChain)
		}
		if !c.Started() {
			t.Fatalf("entry %d: chain not started after epoch record 0", j)
		}
	}
}

// TestCheckEpochRules breaks each rule alone and expects exactly its
// *EpochError, then combinations in the order of design.md 14 step 3.
func TestCheckEpochRules(t *testing.T) {
	root := seeded32("recomputed root")
	other := seeded32("another root")
	// After epoch 4 at time 5000 (log index 9), with a map of 3 leaves.
	after4 := EpochChain{Next: 5, Time: 5000}
	good := func(mod func(r *EpochRecord)) *EpochRecord {
		r := &EpochRecord{Epoch: 5, Timestamp: 6000, LogSize: 12, MapRoot: root, MapSize: 3}
		if mod != nil {
			mod(r)
		}
		return r
	}
	tests := []struct {
		name      string
		chain     EpochChain
		j         uint64
		ent       Entry
		root      [32]byte
		size      uint64
		want      []Rule
		wantChain EpochChain
	}{
		{"valid epoch record", after4, 12, good(nil), root, 3, nil, EpochChain{Next: 6, Time: 6000}},
		{"valid change record", after4, 10, &ChangeRecord{}, [32]byte{}, 0, nil, after4},

		// Entry 0 (design.md 7).
		{"entry 0 does not parse", EpochChain{}, 0, nil, [32]byte{}, 0, []Rule{RuleFirstEntry}, EpochChain{}},
		{"entry 0 is a change record", EpochChain{}, 0, &ChangeRecord{}, [32]byte{}, 0, []Rule{RuleFirstEntry}, EpochChain{}},
		{"change record before epoch record 0", EpochChain{}, 3, &ChangeRecord{}, [32]byte{}, 0, []Rule{RuleFirstEntry}, EpochChain{}},
		{"entry 0 with a non-empty map", EpochChain{}, 0, &EpochRecord{MapRoot: other, MapSize: 1}, other, 1, []Rule{RuleFirstEntry}, EpochChain{Next: 1}},
		{"entry 0 is not epoch 0", EpochChain{}, 0, &EpochRecord{Epoch: 1}, [32]byte{}, 0, []Rule{RuleFirstEntry, RuleEpochNumber}, EpochChain{Next: 2}},
		{"an unparsable entry after epoch 0 is the caller's", after4, 10, nil, [32]byte{}, 0, nil, after4},

		// Epoch records (design.md 14 step 3), one rule each.
		{"epoch skipped", after4, 12, good(func(r *EpochRecord) { r.Epoch = 6 }), root, 3, []Rule{RuleEpochNumber}, EpochChain{Next: 7, Time: 6000}},
		{"epoch repeated", after4, 12, good(func(r *EpochRecord) { r.Epoch = 4 }), root, 3, []Rule{RuleEpochNumber}, EpochChain{Next: 5, Time: 6000}},
		{"log size not the index", after4, 12, good(func(r *EpochRecord) { r.LogSize = 11 }), root, 3, []Rule{RuleEpochLogSize}, EpochChain{Next: 6, Time: 6000}},
		{"time going back", after4, 12, good(func(r *EpochRecord) { r.Timestamp = 4999 }), root, 3, []Rule{RuleEpochTimestamp}, EpochChain{Next: 6, Time: 5000}},
		{"map root not recomputed", after4, 12, good(nil), other, 3, []Rule{RuleMapRoot}, EpochChain{Next: 6, Time: 6000}},
		{"map size not recomputed", after4, 12, good(nil), root, 4, []Rule{RuleMapSize}, EpochChain{Next: 6, Time: 6000}},

		{"every epoch rule", after4, 12, good(func(r *EpochRecord) { r.Epoch, r.LogSize, r.Timestamp = 9, 1, 1 }), other, 4,
			[]Rule{RuleEpochNumber, RuleEpochLogSize, RuleEpochTimestamp, RuleMapRoot, RuleMapSize}, EpochChain{Next: 10, Time: 5000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, errs := CheckEpoch(tt.chain, tt.j, tt.ent, tt.root, tt.size)
			var got []Rule
			for _, e := range errs {
				if e.Index != tt.j {
					t.Errorf("%v: index %d, want %d", e, e.Index, tt.j)
				}
				if e.Reason == "" {
					t.Errorf("%s: no reason", e.Rule)
				}
				got = append(got, e.Rule)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("rules (-want +got):\n%s", diff)
			}
			if c != tt.wantChain {
				t.Errorf("chain %+v, want %+v", c, tt.wantChain)
			}
		})
	}
}

// FuzzCheckEpoch feeds CheckEpoch any entry bytes with any chain: it never
// panics, reports only the epoch rules, at the entry's index, and accepts
// an epoch record exactly when it follows the chain.
func FuzzCheckEpoch(f *testing.F) {
	for _, c := range goldenCases() {
		f.Add(uint64(1), uint64(0), uint64(0), c.data, make([]byte, 32), uint64(0))
	}
	f.Add(uint64(0), uint64(0), uint64(0), mustMarshal(&EpochRecord{}), make([]byte, 32), uint64(0))
	f.Fuzz(func(t *testing.T, next, time, j uint64, entry, root []byte, size uint64) {
		if len(root) != 32 {
			return
		}
		ent, err := ParseEntry(entry)
		if err != nil {
			ent = nil
		}
		c := EpochChain{Next: next, Time: time}
		after, errs := CheckEpoch(c, j, ent, [32]byte(root), size)
		for _, e := range errs {
			if e.Index != j {
				t.Fatalf("%v at index %d", e, j)
			}
			switch e.Rule {
			case RuleFirstEntry, RuleEpochNumber, RuleEpochLogSize, RuleEpochTimestamp, RuleMapRoot, RuleMapSize:
			default:
				t.Fatalf("CheckEpoch reported rule %q", e.Rule)
			}
		}
		r, ok := ent.(*EpochRecord)
		if !ok {
			if after != c {
				t.Fatalf("chain changed by a non-epoch entry: %+v to %+v", c, after)
			}
			if (errs == nil) != (j > 0 && (ent == nil || c.Started())) {
				t.Fatalf("entry %d (%T) after %+v: %v", j, ent, c, errs)
			}
			return
		}
		valid := r.Epoch == next && r.LogSize == j && r.Timestamp >= time && r.MapRoot == [32]byte(root) && r.MapSize == size &&
			(j > 0 || (r.Epoch == 0 && r.MapRoot == [32]byte{} && r.MapSize == 0))
		if valid != (errs == nil) {
			t.Fatalf("epoch record %+v at %d after %+v, map %x/%d: %v", r, j, c, root, size, errs)
		}
		if after.Next != r.Epoch+1 || after.Time != max(time, r.Timestamp) {
			t.Fatalf("chain after %+v: %+v", r, after)
		}
	})
}

// TestRuleNames pins the rule names: they appear in error messages, the
// auditor's stored violations and reports, and ktctl's JSON.
func TestRuleNames(t *testing.T) {
	got := []Rule{
		RuleSignature, RuleVersion, RulePrev, RuleEnroll, RuleKind, RuleDevice, RuleAccount, RuleRecovery, RuleAuthorizers,
		RuleParse, RuleFirstEntry, RuleEpochNumber, RuleEpochLogSize, RuleEpochTimestamp, RuleMapRoot, RuleMapSize, RuleCheckpointRoot,
	}
	want := []Rule{
		"R1 signature", "R2 version", "R3 prev", "R4 enroll", "R4 kind", "R5 device", "R5 account", "R6 recovery", "R7 authorizers",
		"parse", "entry 0", "epoch number", "epoch log size", "epoch timestamp", "map root", "map size", "checkpoint root",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("rule names changed (-want +got):\n%s", diff)
	}
}
