package witness_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keytrans/kt/log/witness"
)

func TestReadPolicyFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, []byte("witness A "+newCosigner(t, "a.example").VKey()+"\nquorum A\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := witness.ReadPolicyFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Quorum(); got != "witness A" {
		t.Errorf("quorum %q, want witness A", got)
	}

	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("quorum B\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = witness.ReadPolicyFile(bad)
	if pe, ok := errors.AsType[*witness.ParseError](err); !ok || pe.Line != 1 || !strings.HasPrefix(err.Error(), "witness policy "+bad+": ") {
		t.Errorf("bad policy: %v, want a *ParseError of line 1 naming the file", err)
	}

	_, err = witness.ReadPolicyFile(filepath.Join(dir, "missing"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "witness policy: ") {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
}
