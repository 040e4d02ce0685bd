package client_test

import (
	"crypto/ed25519"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/log/evidence"
)

// checkContactEvidence checks that the alert carries a bundle of its kind
// that evidence.Check accepts with the log's public parameters alone, and
// that a bundle with one byte changed is refused (the control).
func checkContactEvidence(t *testing.T, k *keys, cc *client.ContactChangedError) {
	t.Helper()
	if cc.Evidence == nil {
		t.Fatalf("no %s evidence: %v", cc.Kind, cc.EvidenceErr)
	}
	v, err := note.NewVerifier(k.logVKey)
	if err != nil {
		t.Fatal(err)
	}
	p := evidence.Params{Origin: testOrigin, LogVerifier: v, RecoveryKey: [32]byte(k.recovery.Public().(ed25519.PublicKey))}
	kind, what, replay, err := evidence.Check(p, cc.Evidence)
	if err != nil || kind != cc.Kind || replay || what == "" || what != cc.Proves {
		t.Fatalf("evidence.Check: kind %s (want %s), replay %v, %q, %v", kind, cc.Kind, replay, what, err)
	}
	t.Logf("%s: %s", kind, what)
	bad := append([]byte(nil), cc.Evidence...)
	bad[len(bad)-3] ^= 1
	if _, _, _, err := evidence.Check(p, bad); err == nil {
		t.Fatalf("a changed bundle checks: %v", err)
	}
}
