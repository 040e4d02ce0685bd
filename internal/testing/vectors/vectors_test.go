package vectors

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

const dir = "../../../testdata/vectors"

// TestVectorsCurrent regenerates every file and compares it with the
// committed one: a changed encoding or verification outcome fails here
// until the vectors are regenerated (and the other implementations
// follow). envelopes.json is regenerated with its committed ciphertexts.
func TestVectorsCurrent(t *testing.T) {
	committed, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := Generate(committed)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, name := range Names {
		total += len(committed[name])
		if !bytes.Equal(committed[name], fresh[name]) {
			t.Errorf("%s is stale or missing: run go run ./internal/testing/vectors/cmd/genvectors and review the diff", name)
		}
	}
	if total > 512<<10 {
		t.Errorf("the vectors take %d bytes; keep them under 512 KiB", total)
	}
}

// runAll decodes a file's vectors and checks that running each one's
// inputs, as read from the JSON, gives its expected outputs.
func runAll[V any](t *testing.T, name string, run func(V) V) {
	t.Helper()
	b, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	var f File[V]
	dec := json.NewDecoder(bytes.NewReader(b[name]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(f.Vectors) == 0 {
		t.Fatalf("%s: no vectors", name)
	}
	for i, v := range f.Vectors {
		want, _ := json.Marshal(v)
		got, _ := json.Marshal(run(v))
		if !bytes.Equal(want, got) {
			t.Errorf("%s vector %d: the implementation gives\n%s\nthe file says\n%s", name, i, got, want)
		}
	}
}

// TestVectorsRun runs every vector through the implementation from its
// JSON form alone, as another implementation would.
func TestVectorsRun(t *testing.T) {
	t.Run("handles", func(t *testing.T) { runAll(t, "handles.json", HandleVector.Run) })
	t.Run("vrf", func(t *testing.T) { runAll(t, "vrf.json", VRFVector.Run) })
	t.Run("commitments", func(t *testing.T) { runAll(t, "commitments.json", CommitmentVector.Run) })
	t.Run("map", func(t *testing.T) { runAll(t, "map.json", MapVector.Run) })
	t.Run("epochs", func(t *testing.T) { runAll(t, "epochs.json", EpochVector.Run) })
	t.Run("lookups", func(t *testing.T) { runAll(t, "lookups.json", LookupVector.Run) })
	t.Run("monitor", func(t *testing.T) { runAll(t, "monitor.json", MonitorVector.Run) })
	t.Run("envelopes", func(t *testing.T) { runAll(t, "envelopes.json", EnvelopeVector.Run) })
	t.Run("evidence", func(t *testing.T) { runAll(t, "evidence.json", EvidenceVector.Run) })
	t.Run("encodings", func(t *testing.T) {
		b, err := Read(dir)
		if err != nil {
			t.Fatal(err)
		}
		var f EncodingsFile
		if err := json.Unmarshal(b["encodings.json"], &f); err != nil {
			t.Fatal(err)
		}
		for i, v := range f.Vectors {
			want, _ := json.Marshal(v)
			got, _ := json.Marshal(v.Run(f.Origin))
			if !bytes.Equal(want, got) {
				t.Errorf("encodings vector %d: the implementation gives\n%s\nthe file says\n%s", i, got, want)
			}
		}
	})
}

// TestVectorsCoverSteps: the lookup vectors fail at every lookup step of
// the client package but the monitor chain (audit mode included), each at
// least once, and each file has valid and invalid
// vectors.
func TestVectorsCoverSteps(t *testing.T) {
	b, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	var f File[LookupVector]
	if err := json.Unmarshal(b["lookups.json"], &f); err != nil {
		t.Fatal(err)
	}
	steps := map[string]bool{}
	ok := 0
	for _, v := range f.Vectors {
		if v.Expect.OK {
			ok++
		} else {
			steps[v.Expect.Failure.Step] = true
		}
	}
	for _, s := range []string{"parse", "handle", "checkpoint signature", "witness quorum", "consistency", "epoch record",
		"freshness", "vrf", "map proof", "record", "commitment", "strict mode", "hpke keys", "audit quorum", "audit lag"} {
		if !steps[s] {
			t.Errorf("no lookup vector fails at step %q", s)
		}
	}
	if ok == 0 {
		t.Error("no valid lookup vector")
	}
	for _, name := range Names {
		if !strings.Contains(string(b[name]), `"description"`) {
			t.Errorf("%s has no description", name)
		}
	}
}
