package conformance_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logapi"
)

// Known answers for RFC 6962 hashing and proofs over the reference tree of
// eight leaves that Certificate Transparency and transparency-dev/merkle
// test against. Values copied, not computed, from
// github.com/transparency-dev/merkle v0.0.2:
//   - testonly/constants.go: LeafInputs, NodeHashes, RootHashes,
//     EmptyRootHash;
//   - proof/verify_test.go: inclusionProofs, consistencyProofs (there with
//     1-based leaf numbers; converted to 0-based indices below).
// They derive from certificate-transparency's C++ merkle_tree_test.cc.

var ctLeaves = []string{
	"",
	"00",
	"10",
	"2021",
	"3031",
	"40414243",
	"5051525354555657",
	"606162636465666768696a6b6c6d6e6f",
}

const ctEmptyRoot = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// ctNodes[level][index]: the perfect subtrees of the 8-leaf tree.
var ctNodes = [][]string{{
	"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
	"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
	"0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
	"07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
	"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
	"4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
	"b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
	"46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
}, {
	"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
	"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
	"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
	"ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
}, {
	"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
	"6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
}, {
	"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}}

// ctRoots[n-1] is the root of the tree of the first n leaves.
var ctRoots = []string{
	"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
	"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
	"aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
	"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
	"4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
	"76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
	"ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
	"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}

var ctInclusion = []struct {
	index, size uint64
	proof       []string
}{
	{0, 1, nil}, // {1, 1, nil} in verify_test.go
	{0, 8, []string{
		"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
		"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
		"6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
	}},
	{5, 8, []string{
		"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
		"ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
		"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
	}},
	{2, 3, []string{
		"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
	}},
	{1, 5, []string{
		"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
		"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
		"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
	}},
}

var ctConsistency = []struct {
	old, new uint64
	proof    []string
}{
	{1, 1, nil},
	{1, 8, []string{
		"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
		"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
		"6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
	}},
	{6, 8, []string{
		"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
		"ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
		"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
	}},
	{2, 5, []string{
		"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
		"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
	}},
	{6, 7, []string{
		"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
		"b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
		"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
	}},
}

func hd(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hds(t testing.TB, ss []string) [][]byte {
	out := [][]byte{}
	for _, s := range ss {
		out = append(out, hd(t, s))
	}
	return out
}

func TestKnownAnswerHashes(t *testing.T) {
	h := rfc6962.DefaultHasher
	t.Run("empty tree", func(t *testing.T) {
		want := hd(t, ctEmptyRoot)
		if got := h.EmptyRoot(); !bytes.Equal(got, want) {
			t.Errorf("merkle EmptyRoot = %x, want %x", got, want)
		}
		got, err := tlog.TreeHash(0, tlog.HashReaderFunc(func([]int64) ([]tlog.Hash, error) { return nil, nil }))
		if err != nil || !bytes.Equal(got[:], want) {
			t.Errorf("sumdb/tlog TreeHash(0) = %x, %v; want %x", got[:], err, want)
		}
	})
	for i, leaf := range ctLeaves {
		t.Run(fmt.Sprintf("leaf %d", i), func(t *testing.T) {
			want := hd(t, ctNodes[0][i])
			if got := h.HashLeaf(hd(t, leaf)); !bytes.Equal(got, want) {
				t.Errorf("merkle HashLeaf(%s) = %x, want %x", leaf, got, want)
			}
			if got := tlog.RecordHash(hd(t, leaf)); !bytes.Equal(got[:], want) {
				t.Errorf("sumdb/tlog RecordHash(%s) = %x, want %x", leaf, got[:], want)
			}
		})
	}
	for level := 1; level < len(ctNodes); level++ {
		for i, node := range ctNodes[level] {
			t.Run(fmt.Sprintf("node %d.%d", level, i), func(t *testing.T) {
				l, r := hd(t, ctNodes[level-1][2*i]), hd(t, ctNodes[level-1][2*i+1])
				want := hd(t, node)
				if got := h.HashChildren(l, r); !bytes.Equal(got, want) {
					t.Errorf("merkle HashChildren = %x, want %x", got, want)
				}
				if got := tlog.NodeHash(tlog.Hash(l), tlog.Hash(r)); !bytes.Equal(got[:], want) {
					t.Errorf("sumdb/tlog NodeHash = %x, want %x", got[:], want)
				}
			})
		}
	}
}

// ctLog returns an in-memory log that has published the empty tree, and
// its readers: the log itself and an HTTP read API client for it.
func ctLog(t *testing.T) (*conformance.MemoryLog, map[string]log.Reader, note.Verifier) {
	t.Helper()
	s, v := newKey(t, "example.com/ct")
	ml := conformance.NewMemoryLog("example.com/ct", s)
	if err := ml.PublishEmpty(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(logapi.NewHandler(ml))
	t.Cleanup(srv.Close)
	return ml, map[string]log.Reader{
		"memory": ml,
		"http":   logapi.NewClient(srv.URL, srv.Client()),
	}, v
}

func newKey(t testing.TB, name string) (note.Signer, note.Verifier) {
	t.Helper()
	_, _, s, v := testkit.NoteKey(t, name)
	return s, v
}

// appendCT appends the reference leaves; the first is empty, which no log
// accepts through Append.
func appendCT(t *testing.T, ml *conformance.MemoryLog, leaves []string) {
	t.Helper()
	for _, leaf := range leaves {
		if _, err := ml.AppendUnchecked([][]byte{hd(t, leaf)}); err != nil {
			t.Fatal(err)
		}
	}
}

// ctStore is the reference tree as sumdb/tlog stores it.
func ctStore(t *testing.T) tlog.HashReaderFunc {
	var store []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = store[x]
		}
		return out, nil
	})
	for i, leaf := range ctLeaves {
		hs, err := tlog.StoredHashes(int64(i), hd(t, leaf), r)
		if err != nil {
			t.Fatal(err)
		}
		store = append(store, hs...)
	}
	return r
}

func TestKnownAnswerRoots(t *testing.T) {
	ml, readers, v := ctLog(t)
	store := ctStore(t)
	for n := 0; n <= len(ctLeaves); n++ {
		if n > 0 {
			appendCT(t, ml, ctLeaves[n-1:n])
		}
		want := hd(t, ctEmptyRoot)
		if n > 0 {
			want = hd(t, ctRoots[n-1])
		}
		for name, r := range readers {
			t.Run(fmt.Sprintf("%s/size %d", name, n), func(t *testing.T) {
				raw, err := r.Checkpoint(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				cp, _, err := log.ParseCheckpoint(raw, "example.com/ct", v)
				if err != nil {
					t.Fatal(err)
				}
				if cp.Size != uint64(n) || !bytes.Equal(cp.Hash, want) {
					t.Errorf("checkpoint size %d root %x, want size %d root %x", cp.Size, cp.Hash, n, want)
				}
			})
		}
		t.Run(fmt.Sprintf("sumdb-tlog/size %d", n), func(t *testing.T) {
			got, err := tlog.TreeHash(int64(n), store)
			if err != nil || !bytes.Equal(got[:], want) {
				t.Errorf("TreeHash(%d) = %x, %v; want %x", n, got[:], err, want)
			}
		})
	}
}

func TestKnownAnswerProofs(t *testing.T) {
	ml, readers, _ := ctLog(t)
	appendCT(t, ml, ctLeaves)
	store := ctStore(t)
	h := rfc6962.DefaultHasher

	for _, tc := range ctInclusion {
		want := hds(t, tc.proof)
		root := hd(t, ctRoots[tc.size-1])
		leaf := hd(t, ctNodes[0][tc.index])
		for name, r := range readers {
			t.Run(fmt.Sprintf("inclusion/%s/%d in %d", name, tc.index, tc.size), func(t *testing.T) {
				got, err := r.InclusionProof(t.Context(), tc.index, tc.size)
				if err != nil {
					t.Fatal(err)
				}
				if !equalHashes(got, want) {
					t.Errorf("proof %x, want %x", got, want)
				}
			})
		}
		t.Run(fmt.Sprintf("inclusion/verify/%d in %d", tc.index, tc.size), func(t *testing.T) {
			if err := proof.VerifyInclusion(h, tc.index, tc.size, leaf, want, root); err != nil {
				t.Errorf("merkle VerifyInclusion: %v", err)
			}
			if err := tlog.CheckRecord(toTlog(t, want), int64(tc.size), tlog.Hash(root), int64(tc.index), tlog.Hash(leaf)); err != nil {
				t.Errorf("sumdb/tlog CheckRecord: %v", err)
			}
			p, err := tlog.ProveRecord(int64(tc.size), int64(tc.index), store)
			if err != nil || !equalHashes(fromTlog(p), want) {
				t.Errorf("sumdb/tlog ProveRecord = %x, %v; want %x", p, err, want)
			}
			n, err := logapi.InclusionProofSize(tc.index, tc.size)
			if err != nil || n != len(want) {
				t.Errorf("InclusionProofSize = %d, %v; want %d", n, err, len(want))
			}
		})
	}

	for _, tc := range ctConsistency {
		want := hds(t, tc.proof)
		oldRoot, newRoot := hd(t, ctRoots[tc.old-1]), hd(t, ctRoots[tc.new-1])
		for name, r := range readers {
			t.Run(fmt.Sprintf("consistency/%s/%d to %d", name, tc.old, tc.new), func(t *testing.T) {
				got, err := r.ConsistencyProof(t.Context(), tc.old, tc.new)
				if err != nil {
					t.Fatal(err)
				}
				if !equalHashes(got, want) {
					t.Errorf("proof %x, want %x", got, want)
				}
			})
		}
		t.Run(fmt.Sprintf("consistency/verify/%d to %d", tc.old, tc.new), func(t *testing.T) {
			if err := proof.VerifyConsistency(h, tc.old, tc.new, want, oldRoot, newRoot); err != nil {
				t.Errorf("merkle VerifyConsistency: %v", err)
			}
			if err := tlog.CheckTree(toTlog(t, want), int64(tc.new), tlog.Hash(newRoot), int64(tc.old), tlog.Hash(oldRoot)); err != nil {
				t.Errorf("sumdb/tlog CheckTree: %v", err)
			}
			p, err := tlog.ProveTree(int64(tc.new), int64(tc.old), store)
			if err != nil || !equalHashes(fromTlog(p), want) {
				t.Errorf("sumdb/tlog ProveTree = %x, %v; want %x", p, err, want)
			}
			n, err := logapi.ConsistencyProofSize(tc.old, tc.new)
			if err != nil || n != len(want) {
				t.Errorf("ConsistencyProofSize = %d, %v; want %d", n, err, len(want))
			}
		})
	}
}

// TestKnownAnswerTamper checks that each known-answer proof, with any one
// hash altered, is rejected by both verifiers: the known answers are not
// accepted vacuously.
func TestKnownAnswerTamper(t *testing.T) {
	h := rfc6962.DefaultHasher
	for _, tc := range ctInclusion {
		root, leaf := hd(t, ctRoots[tc.size-1]), hd(t, ctNodes[0][tc.index])
		for j := range tc.proof {
			p := hds(t, tc.proof)
			p[j][0] ^= 1
			if proof.VerifyInclusion(h, tc.index, tc.size, leaf, p, root) == nil {
				t.Errorf("merkle accepted inclusion %d in %d with hash %d altered", tc.index, tc.size, j)
			}
			if tlog.CheckRecord(toTlog(t, p), int64(tc.size), tlog.Hash(root), int64(tc.index), tlog.Hash(leaf)) == nil {
				t.Errorf("sumdb/tlog accepted inclusion %d in %d with hash %d altered", tc.index, tc.size, j)
			}
		}
	}
	for _, tc := range ctConsistency {
		oldRoot, newRoot := hd(t, ctRoots[tc.old-1]), hd(t, ctRoots[tc.new-1])
		for j := range tc.proof {
			p := hds(t, tc.proof)
			p[j][0] ^= 1
			if proof.VerifyConsistency(h, tc.old, tc.new, p, oldRoot, newRoot) == nil {
				t.Errorf("merkle accepted consistency %d to %d with hash %d altered", tc.old, tc.new, j)
			}
			if tlog.CheckTree(toTlog(t, p), int64(tc.new), tlog.Hash(newRoot), int64(tc.old), tlog.Hash(oldRoot)) == nil {
				t.Errorf("sumdb/tlog accepted consistency %d to %d with hash %d altered", tc.old, tc.new, j)
			}
		}
	}
}

func equalHashes(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func toTlog(t testing.TB, p [][]byte) []tlog.Hash {
	t.Helper()
	out := make([]tlog.Hash, len(p))
	for i, h := range p {
		if len(h) != tlog.HashSize {
			t.Fatalf("hash %d has %d bytes", i, len(h))
		}
		out[i] = tlog.Hash(h)
	}
	return out
}

func fromTlog(p []tlog.Hash) [][]byte {
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = p[i][:]
	}
	return out
}
