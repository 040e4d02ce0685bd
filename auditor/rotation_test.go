package auditor_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/http"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/log"
)

func signedRotation(t *testing.T, kind api.KeyKind, seq uint64, old, nw ed25519.PrivateKey) []byte {
	t.Helper()
	r := &api.RotationRecord{Kind: kind, Sequence: seq}
	if err := r.SignRotation(origin, old, nw); err != nil {
		t.Fatal(err)
	}
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAuditForgedRotation: the auditor stores a forged rotation record in
// the log as a violation naming its rule, and does not vouch for the log
// after it; the control, an honest rotation, is no violation.
func TestAuditForgedRotation(t *testing.T) {
	for _, c := range []struct {
		name string
		rec  func(b *ktlog.Builder) []byte
		want []string
	}{
		{"control", func(b *ktlog.Builder) []byte {
			return signedRotation(t, api.KeyRecovery, 1, b.Recovery, ktlog.Key("r2"))
		}, nil},
		{"old key not current", func(b *ktlog.Builder) []byte {
			return signedRotation(t, api.KeyRecovery, 1, ktlog.Key("mallory"), ktlog.Key("r2"))
		}, []string{"rotation old key"}},
		{"skipped sequence", func(b *ktlog.Builder) []byte {
			return signedRotation(t, api.KeyRecovery, 3, b.Recovery, ktlog.Key("r2"))
		}, []string{"rotation sequence"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var j uint64
			vs, st := auditFaulty(t, func(b *ktlog.Builder) {
				b.Honest(2, 1)
				j = b.Raw(c.rec(b))
				b.Epoch()
			})
			var want []string
			for _, w := range c.want {
				want = append(want, fmt.Sprintf("%d %s", j, w))
			}
			if got := rules(vs); !equalStrings(got, want) {
				t.Fatalf("violations %v, want %v", got, want)
			}
			if (c.want == nil) != (st.Clean != nil && st.Latest != nil && st.Clean.Size == st.Latest.Size) {
				t.Fatalf("status %+v: clean must reach the latest checkpoint exactly when there is no violation", st)
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAuditorFollowsLogRotation: after replaying a rotation of the log
// key, the auditor audits checkpoints signed by the new key alone and, as
// a witness, cosigns them; before, it refuses them (the control).
func TestAuditorFollowsLogRotation(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	b := ktlog.New(origin)
	b.Honest(3, 2)
	l.appendAll(t, b)
	n := newNode(t, "auditor.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}})
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	nskey, _, ns, nv := newLogKey(t)
	oldPriv, err := log.Ed25519PrivateKey(l.skey)
	if err != nil {
		t.Fatal(err)
	}
	newPriv, err := log.Ed25519PrivateKey(nskey)
	if err != nil {
		t.Fatal(err)
	}
	// The same log, signed by the new key alone from now on.
	b.Raw(signedRotation(t, api.KeyLog, 1, oldPriv, newPriv))
	b.Epoch()
	m := conformance.NewMemoryLog(origin, ns)
	if _, err := m.Append(ctx, b.Entries()); err != nil {
		t.Fatal(err)
	}
	cp, err := m.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Control: not yet replayed, a checkpoint by the new key is refused.
	if code, body := post(t, n.url+auditor.PathAddCheckpoint, "old 0\n\n"+string(cp)); code != http.StatusForbidden {
		t.Fatalf("add-checkpoint under the new key before the rotation was replayed: %d %s", code, body)
	}
	l.replace(m)
	l.verifier, l.signer = nv, ns
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatalf("audit across the rotation: %v", err)
	}
	st := n.a.Status()[0]
	if st.Latest == nil || st.Latest.Size != b.Len() || st.Violations != 0 {
		t.Fatalf("status after the rotation: %+v", st)
	}
	if code, body := post(t, n.url+auditor.PathAddCheckpoint, "old 0\n\n"+string(cp)); code != http.StatusOK {
		t.Fatalf("add-checkpoint under the new key after the rotation: %d %s", code, body)
	}
}
