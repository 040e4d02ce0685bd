package auditor_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/vrf"
)

func vrfTestKey(label byte) *vrf.PrivateKey {
	k, err := vrf.NewPrivateKey(bytes.Repeat([]byte{label}, 32))
	if err != nil {
		panic(err)
	}
	return k
}

// TestAuditVRFRotation: the auditor replays a rotation of the VRF key and
// its moves (design.md 11.2); a rotation proved by another key, or a move
// that breaks a re-indexing rule, is a stored violation and the auditor
// does not vouch after it; the control, an honest rotation with every
// handle moved, is none.
func TestAuditVRFRotation(t *testing.T) {
	oldK, newK, mallory := vrfTestKey(1), vrfTestKey(2), vrfTestKey(3)
	for _, c := range []struct {
		name      string
		prove     *vrf.PrivateKey
		moveTwice bool
		want      string
	}{
		{"control", oldK, false, ""},
		{"old key's proof by another key", mallory, false, "rotation old proof"},
		{"a handle moved twice", oldK, true, "move old index"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var j uint64
			vs, st := auditFaulty(t, func(b *ktlog.Builder) {
				b.Honest(2, 1)
				r := &api.RotationRecord{Kind: api.KeyVRF, Sequence: 1}
				if err := r.ProveVRFRotation(b.Origin, [32]byte(oldK.Public().Bytes()), [32]byte(newK.Public().Bytes()), c.prove.ProveRotation, newK.ProveRotation); err != nil {
					t.Fatal(err)
				}
				raw, _ := r.MarshalBinary()
				j = b.Raw(raw)
				b.Move(1, ktlog.Index("h0"), ktlog.Index("h0 new"))
				b.Move(1, ktlog.Index("h1"), ktlog.Index("h1 new"))
				if c.moveTwice {
					j = b.Move(1, ktlog.Index("h0"), ktlog.Index("h0 again"))
				}
				b.Epoch()
			})
			var want []string
			if c.want != "" {
				want = []string{fmt.Sprintf("%d %s", j, c.want)}
			}
			if got := rules(vs); !equalStrings(got, want) {
				t.Fatalf("violations %v, want %v", got, want)
			}
			if (c.want == "") != (st.Clean != nil && st.Latest != nil && st.Clean.Size == st.Latest.Size) {
				t.Fatalf("status %+v: clean must reach the latest checkpoint exactly when there is no violation", st)
			}
		})
	}
}
