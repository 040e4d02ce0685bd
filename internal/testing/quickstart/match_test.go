package quickstart

import "testing"

// TestMatch checks that the comparison of documented and actual output
// tolerates only what varies from run to run.
func TestMatch(t *testing.T) {
	doc := []string{
		"mailto:bob@example.com: version 3 (recovery), 3 devices",
		"  WARNING: the latest change was made by the directory's recovery path",
		"  device 6644b9ee182acb9fa7e557f0326d0b24  x25519  signing key 4cf08e7dd4dc5c76…  created 2026-12-01T22:05:36Z",
		"  ✓ epoch 3 record is the last entry of checkpoint size 7",
		"  ✓ witness quorum (2 cosignatures)",
		"  ✓ fresh: epoch 107ms old",
		"auditor-2  localhost/auditor-2  81816c80  2026-12-01T22:05:39Z  valid",
		"auditor-1  localhost/auditor-1  b6f5213e  2026-12-01T22:05:39Z  valid",
	}
	same := []string{
		"mailto:bob@example.com: version 3 (recovery), 3 devices",
		"  WARNING: the latest change was made by the directory's recovery path",
		"  device 0123456789abcdef0123456789abcdef  x25519  signing key 89abcdef01234567…  created 2027-01-02T03:04:05Z",
		"  ✓ epoch 12 record is the last entry of checkpoint size 25",
		"  ✓ witness quorum (2 cosignatures)",
		"  ✓ fresh: epoch 1.5s old",
		"auditor-1  localhost/auditor-1  603e10dc  2026-12-01T22:07:09Z  valid",
		"auditor-2  localhost/auditor-2  b7731bdc  2026-12-01T22:07:09Z  valid",
	}
	if ok, at := match(doc, same); !ok {
		t.Fatalf("equivalent output rejected at line %d", at)
	}
	for i, bad := range []string{
		"mailto:bob@example.com: version 2 (recovery), 3 devices",
		"mailto:bob@example.com: version 3 (device), 3 devices",
		"mailto:bob@example.com: version 3 (recovery), 2 devices",
		"mailto:alice@example.com: version 3 (recovery), 3 devices",
	} {
		got := append([]string{bad}, same[1:]...)
		if ok, _ := match(doc, got); ok {
			t.Errorf("case %d: %q accepted", i, bad)
		}
	}
	if ok, _ := match(doc, same[:len(same)-1]); ok {
		t.Error("a missing line accepted")
	}
	if ok, _ := match(doc, append(same, "extra")); ok {
		t.Error("an extra line accepted")
	}
	noWarning := append([]string{same[0]}, same[2:]...)
	if ok, _ := match(doc, noWarning); ok {
		t.Error("a missing warning accepted")
	}
	if ok, _ := match([]string{same[0], "...", "  ✓ witness quorum (2 cosignatures)", "..."}, same); !ok {
		t.Error("an elision did not match")
	}
	if ok, _ := match([]string{"...", "  ✓ witness quorum (1 cosignatures)", "..."}, same); ok {
		t.Error("an elision matched a changed cosignature count")
	}
}

// TestMatchEvidenceOrder checks that the two checkpoints of a bundle may
// come in either order, but not lose a signature.
func TestMatchEvidenceOrder(t *testing.T) {
	doc := []string{
		"checkpoint A  localhost/kt size 9 root 9f6a994f42dc12b1fb68da8c120d4f694591687c76518d278cadebfa1cbd3b1a",
		"  signatures  localhost/kt+f8c13f44 log, auditor-1 (localhost/auditor-1+b95bc9b9) valid, auditor-2 (localhost/auditor-2+d68ac183) valid",
		"checkpoint B  localhost/kt size 9 root be89a6b2d7aa582dfc3b16d6fcf7039bf9a2298bfe78d809c1701c156a023a01",
		"  signatures  localhost/kt+f8c13f44 log",
		"result            FORK PROVEN: the log signed two trees of which neither extends the other",
	}
	swapped := []string{doc[2], doc[3], doc[0], doc[1], doc[4]}
	if ok, at := match(doc, swapped); !ok {
		t.Errorf("swapped checkpoints rejected at %d", at)
	}
	lost := []string{doc[0], doc[3], doc[2], doc[3], doc[4]}
	if ok, _ := match(doc, lost); ok {
		t.Error("a lost cosignature accepted")
	}
	failed := append(append([]string(nil), doc[:4]...), "result            FAILED")
	if ok, _ := match(doc, failed); ok {
		t.Error("a failed verification accepted")
	}
}
