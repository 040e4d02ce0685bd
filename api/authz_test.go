package api

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
)

func TestCheckChange(t *testing.T) {
	devA, privA := testDevice("a", false)
	devB, privB := testDevice("b", false)
	acctPriv, _ := testKey("account")
	recPriv, recPub := testKey("recovery")
	strangerPriv, _ := testKey("stranger")

	// History: v1 enroll {a, account}; v2 device-signed {a, b}.
	set1 := testSet(devA)
	set1.SignAccount(testOrigin, seeded32("vrf index alice"), 1, acctPriv)
	rec1, _, _ := testRecord(set1, 1, [32]byte{}, AuthEnroll, privA)
	e1 := mustMarshal(rec1)
	st1 := rec1.State(e1)

	set2 := testSet(devA, devB)
	rec2, _, _ := testRecord(set2, 2, LeafHash(e1), AuthDevice, privA)
	e2 := mustMarshal(rec2)
	st2 := rec2.State(e2)
	tomb, _, _ := testRecord(testSet(), 3, LeafHash(e2), AuthRecovery, recPriv)
	stTomb := tomb.State(mustMarshal(tomb))

	tests := []struct {
		name     string
		prev     *HandleState
		next     *ChangeRecord
		wantRule Rule // "" for success
	}{
		{"enroll first", nil, rec1, ""},
		{"device by a listed device", st1, rec2, ""},
		{"recovery", st2, tomb, ""},
		{"account key", st1, must(testRecord(set2, 2, st1.LeafHash, AuthAccount, acctPriv)), ""},
		{"re-enroll after tombstone", stTomb, must(testRecord(set1, 4, stTomb.LeafHash, AuthEnroll, privA)), ""},

		{"first change not version 1", nil, must(testRecord(set1, 2, [32]byte{}, AuthEnroll, privA)), "R2 version"},
		{"first change with prev", nil, must(testRecord(set1, 1, [32]byte{9}, AuthEnroll, privA)), "R3 prev"},
		{"version gap", st1, must(testRecord(set2, 3, st1.LeafHash, AuthDevice, privA)), "R2 version"},
		{"replay of v2 after v2", st2, rec2, "R2 version"},
		{"wrong prev", st1, must(testRecord(set2, 2, [32]byte{1}, AuthDevice, privA)), "R3 prev"},
		{"enroll over live authorizers", st1, must(testRecord(set2, 2, st1.LeafHash, AuthEnroll, privA)), "R4 enroll"},
		{"enroll signer not in new set", nil, must(testRecord(set1, 1, [32]byte{}, AuthEnroll, privB)), "R4 enroll"},
		{"device not listed (removed or never added)", st1, must(testRecord(set2, 2, st1.LeafHash, AuthDevice, privB)), "R5 device"},
		{"device key used as account key", st1, must(testRecord(set2, 2, st1.LeafHash, AuthAccount, privA)), "R5 account"},
		{"account key used as device key", st1, must(testRecord(set2, 2, st1.LeafHash, AuthDevice, acctPriv)), "R5 device"},
		{"device change as first change", nil, must(testRecord(set1, 1, [32]byte{}, AuthDevice, privA)), "R5 device"},
		{"recovery by another key", st2, must(testRecord(testSet(), 3, st2.LeafHash, AuthRecovery, strangerPriv)), "R6 recovery"},
		{"recovery as first change", nil, must(testRecord(set1, 1, [32]byte{}, AuthRecovery, recPriv)), "R6 recovery"},
		{"tampered after signing", st1, func() *ChangeRecord {
			r := must(testRecord(set2, 2, st1.LeafHash, AuthDevice, privA))
			r.Commitment[0] ^= 1
			return r
		}(), "R1 signature"},
		{"signed for another origin", st1, func() *ChangeRecord {
			r := must(testRecord(set2, 2, st1.LeafHash, AuthDevice, privA))
			r.Sign("other.example/kt", privA)
			return r
		}(), "R1 signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckChange(testOrigin, tt.prev, tt.next, recPub)
			if tt.wantRule == "" {
				if err != nil {
					t.Fatalf("CheckChange: %v", err)
				}
				return
			}
			var ae *AuthError
			if !errors.As(err, &ae) || !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("err = %v, want *AuthError", err)
			}
			if ae.Rule != tt.wantRule {
				t.Errorf("rule %q (%v), want %q", ae.Rule, err, tt.wantRule)
			}
			if tt.wantRule == "R1 signature" && !errors.Is(err, ErrBadSignature) {
				t.Errorf("signature failure does not wrap ErrBadSignature: %v", err)
			}
		})
	}
}

func must(r *ChangeRecord, _ [32]byte, _ []byte) *ChangeRecord { return r }

func TestOpenCommitment(t *testing.T) {
	devA, privA := testDevice("a", false)
	devB, _ := testDevice("b", false)
	set := testSet(devA, devB)
	rec, opening, value := testRecord(set, 1, [32]byte{}, AuthEnroll, privA)
	got, err := OpenCommitment(rec, opening, value)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Devices) != 2 {
		t.Fatalf("opened %d devices, want 2", len(got.Devices))
	}
	t.Run("wrong opening", func(t *testing.T) {
		o := opening
		o[0] ^= 1
		if _, err := OpenCommitment(rec, o, value); !errors.Is(err, ErrCommitment) {
			t.Fatalf("err = %v, want ErrCommitment", err)
		}
	})
	t.Run("other value", func(t *testing.T) {
		v := mustMarshal(testSet(devA))
		if _, err := OpenCommitment(rec, opening, v); !errors.Is(err, ErrCommitment) {
			t.Fatalf("err = %v, want ErrCommitment", err)
		}
	})
	t.Run("other version", func(t *testing.T) {
		r := *rec
		r.Version = 2
		if _, err := OpenCommitment(&r, opening, value); !errors.Is(err, ErrCommitment) {
			t.Fatalf("err = %v, want ErrCommitment", err)
		}
	})
	t.Run("authorizers hide a device", func(t *testing.T) {
		// Signed by a, committing to {a, b}, but naming only a as an
		// authorizer: b could never be removed by the rules' accounting.
		r := *rec
		r.Authorizers = testSet(devA).Authorizers()
		r.Sign(testOrigin, privA)
		var ae *AuthError
		if _, err := OpenCommitment(&r, opening, value); !errors.As(err, &ae) || ae.Rule != "R7 authorizers" {
			t.Fatalf("err = %v, want R7 authorizers", err)
		}
	})
	t.Run("malformed value", func(t *testing.T) {
		bad := append(value[:len(value):len(value)], 0)
		r := *rec
		r.Commitment = Commit(opening, r.Index, r.Version, bad)
		if _, err := OpenCommitment(&r, opening, bad); !errors.Is(err, ErrMalformed) {
			t.Fatalf("err = %v, want ErrMalformed", err)
		}
	})
}

// TestHashes checks the hash helpers against their definitions, computed
// here with crypto/sha256 directly.
func TestHashes(t *testing.T) {
	entry := []byte("entry")
	if got, want := LeafHash(entry), sha256.Sum256(append([]byte{0}, entry...)); got != want {
		t.Errorf("LeafHash = %x, want SHA-256(0x00 || entry) = %x", got, want)
	}
	// RFC 6962 empty-leaf known answer.
	if got := LeafHash(nil); hex.EncodeToString(got[:]) != "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d" {
		t.Errorf("LeafHash(empty) = %x", got)
	}
	opening, index := seeded32("o"), seeded32("i")
	var in []byte
	in = append(in, "kt/v1/commit\x00"...)
	in = append(in, opening[:]...)
	in = append(in, index[:]...)
	in = append(in, 0, 0, 0, 0, 0, 0, 1, 2)
	in = append(in, "value"...)
	if got, want := Commit(opening, index, 258, []byte("value")), sha256.Sum256(in); got != want {
		t.Errorf("Commit = %x, want %x", got, want)
	}
	if got := string(VRFInput("tel:+14155550100")); got != "kt/v1/handle\x00tel:+14155550100" {
		t.Errorf("VRFInput = %q", got)
	}
}
