package ktctl_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/keytrans/kt/cmd/ktctl/internal/ktctl"
	"github.com/keytrans/kt/internal/testing/conformance"
)

// pagingReader calls onPage after each page of entries.
type pagingReader struct {
	*conformance.MemoryLog
	onPage func()
}

func (r pagingReader) Entries(ctx context.Context, start, end uint64) ([][]byte, error) {
	es, err := r.MemoryLog.Entries(ctx, start, end)
	if r.onPage != nil {
		r.onPage()
	}
	return es, err
}

// TestFsckInterruptAndResume interrupts a replay after its first page,
// and resumes it from the position file it saved.
func TestFsckInterruptAndResume(t *testing.T) {
	var entries [][]byte
	for i := range uint64(2000) {
		entries = append(entries, epochEntry(i, i))
	}
	l, k := memLog(t, entries)
	ctx := context.Background()
	cp, err := ktctl.FetchCheckpoint(ctx, l, k)
	if err != nil {
		t.Fatal(err)
	}
	pos := filepath.Join(t.TempDir(), "position")
	cctx, cancel := context.WithCancel(ctx)
	res, err := ktctl.Fsck(cctx, pagingReader{l, cancel}, cp, k, ktctl.FsckOptions{Position: pos})
	if !errors.Is(err, context.Canceled) || res == nil || res.Size == 0 || res.Size >= 2000 {
		t.Fatalf("interrupted Fsck: %+v, %v; want a partial replay and context.Canceled", res, err)
	}
	stopped := res.Size
	if _, err := os.Stat(pos); err != nil {
		t.Fatalf("no position saved: %v", err)
	}
	var pages []uint64
	res, err = ktctl.Fsck(ctx, pagingReader{l, nil}, cp, k, ktctl.FsckOptions{Position: pos, Progress: func(done, _ uint64) { pages = append(pages, done) }})
	if err != nil || res.From != stopped || res.Size != 2000 || res.NextEpoch != 2000 {
		t.Fatalf("resumed Fsck: %+v, %v; want from %d", res, err, stopped)
	}
	if len(pages) == 0 || pages[0] <= stopped || pages[len(pages)-1] != 2000 {
		t.Errorf("progress %v", pages)
	}
}
