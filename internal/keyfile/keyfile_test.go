package keyfile

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "k.key")
	var n atomic.Int64
	gen := func() (string, error) { return fmt.Sprintf("key-%d", n.Add(1)), nil }

	// Racing creators all end up with the one key that was linked in.
	const racers = 16
	texts := make([]string, racers)
	created := make([]bool, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			texts[i], created[i], err = LoadOrCreate(path, gen)
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	winners := 0
	for i := range racers {
		if texts[i] != texts[0] {
			t.Fatalf("racer %d got %q, racer 0 got %q", i, texts[i], texts[0])
		}
		if created[i] {
			winners++
		}
	}
	if winners != 1 {
		t.Fatalf("%d racers report creating the file, want exactly 1", winners)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	// Existing files are read, never regenerated.
	again, c, err := LoadOrCreate(path, func() (string, error) { return "other", nil })
	if err != nil || c || again != texts[0] {
		t.Fatalf("second call = %q, %v, %v; want the existing key", again, c, err)
	}
	// No temporary files are left behind.
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Fatalf("directory holds %d files, want only the key", len(ents))
	}
}
