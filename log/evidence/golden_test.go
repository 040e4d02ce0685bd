package evidence_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/log/evidence"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// fixedKey is a log key from a fixed seed, so that signatures (Ed25519 is
// deterministic) and therefore bundles are reproducible.
func fixedKey(t testing.TB) key {
	skey, vkey, err := note.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{7}, 32)), origin)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	return key{s, v}
}

// TestGolden pins the kt-evidence/v1 encoding: a change of format is a
// visible diff of testdata/*.golden.
func TestGolden(t *testing.T) {
	ctx := context.Background()
	k := fixedKey(t)
	for _, tc := range []struct {
		name         string
		common, m, n int
	}{
		{"fork-5-13", 3, 5, 13},
		{"fork-4-9", 2, 4, 9}, // power of two: prepended subtree hash
		{"fork-same-size", 2, 6, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, lb, cpa, cpb := forked(t, k, tc.common, tc.m, tc.n)
			b, err := evidence.Build(ctx, k.v, cpa[tc.m-1], cpb[tc.n-1], lb)
			if err != nil {
				t.Fatal(err)
			}
			got := b.Marshal()
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoding changed:\n got %s\nwant %s", got, want)
			}
			if _, err := evidence.Verify(want, k.v); err != nil {
				t.Fatal(err)
			}
		})
	}
}
