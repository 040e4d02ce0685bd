package faults

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keytrans/kt/api/ktpb"
)

// TestVerifyTilesFindsDamagedTile is issue 17 item 5: with ktd stopped,
// bit 0 of byte 325 of DATA_DIR/log/tile/0/000 is flipped (a leaf hash
// inside a full tile: no checkpoint is built on it, the replay of the
// entries still gives the signed root, and ktd starts); `ktctl verify
// --tiles` must exit 1 naming the tile, where it exits 0 before.
func TestVerifyTilesFindsDamagedTile(t *testing.T) {
	dataDir := t.TempDir()
	p := startKtd(t, flags(dataDir))
	k := loadKeys(t, dataDir)
	cc := dial(t, p.grpc)
	dc, lc := ktpb.NewDirectoryClient(cc), ktpb.NewLogClient(cc)
	enrollMany(t, k, dc, "a", 300, 16)
	_, size, _ := k.checkpoint(t, lc)
	k.waitSize(t, lc, size)
	p.stop(t)

	verify := func() (int, string) {
		cmd := exec.Command(ktctlBin, "verify", "--quiet", "--tiles", filepath.Join(dataDir, "log"), "--data-dir", dataDir)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	if code, out := verify(); code != 0 || !strings.Contains(out, "tiles") || !strings.Contains(out, "ok: every hash tile") {
		t.Fatalf("verify --tiles on an intact log: exit %d\n%s", code, out)
	}
	flip(t, filepath.Join(dataDir, "log", "tile", "0", "000"), 325)
	code, out := verify()
	if code != 1 || !strings.Contains(out, "tile/0/000") || !strings.Contains(out, "hash 10 (byte 320)") {
		t.Fatalf("verify --tiles on a damaged tile: exit %d, want 1 naming tile/0/000 hash 10\n%s", code, out)
	}
	t.Logf("ktctl verify --tiles:\n%s", out)
}
