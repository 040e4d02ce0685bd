package client

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/internal/testing/testonly"
	"github.com/keytrans/kt/log/witness"
)

// TestAuditStatementSecond: statements carry whole seconds, so one made
// in the second of a sub-second epoch timestamp counts whatever the skew
// (design.md 12.2 step 2.2), while one a second before it minus the skew
// does not.
func TestAuditStatementSecond(t *testing.T) {
	a := testonly.NewCosigner(t, "a1.example/audit")
	pol, err := witness.ParseAuditPolicy([]byte("auditor a1 " + a.VKey() + "\nquorum a1\n"))
	if err != nil {
		t.Fatal(err)
	}
	epoch := time.Date(2026, 1, 1, 12, 0, 1, 900e6, time.UTC) // 12:00:01.900
	text := "example.com/kt\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
	skey, vkey, err := note.GenerateKey(nil, "example.com/kt")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	logSigned, err := note.Sign(&note.Note{Text: text}, signer)
	if err != nil {
		t.Fatal(err)
	}
	p := &Params{Audit: pol, Skew: 100 * time.Millisecond}
	for _, c := range []struct {
		name   string
		signed time.Time
		ok     bool
	}{
		{"in the epoch's second", epoch.Truncate(time.Second), true},
		{"a second before it, more than the skew", epoch.Truncate(time.Second).Add(-time.Second), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := note.Open(append(logSigned, a.Sign(text, uint64(c.signed.Unix()))...), note.VerifierList(verifier))
			if err != nil {
				t.Fatal(err)
			}
			e := &Epoch{Record: api.EpochRecord{Timestamp: uint64(epoch.UnixMilli())}}
			err = verifyAudit(p, n, e, epoch.Add(time.Second))
			if c.ok != (err == nil) || !c.ok && !errors.Is(err, ErrAuditQuorum) {
				t.Fatalf("verifyAudit: %v", err)
			}
		})
	}
}
