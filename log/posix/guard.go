package posix

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	fmtlog "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/tilecheck"
)

// treeStatePath is Tessera's private record of the integrated tree (size
// and root, JSON), relative to the data directory
// (storage/posix/files.go, writeTreeState). Tessera signs what it holds.
var treeStatePath = filepath.Join(".state", "treeState")

// ErrCorrupt is matched (errors.Is) by the errors of New and of the
// checkpoint signer when the data directory does not reproduce the last
// signed checkpoint: a tile, an entry bundle, the checkpoint file or the
// tree state is damaged. The error names the files. Nothing more is signed
// until an operator repaired the directory (docs/operations.md, Faults).
var ErrCorrupt = tilecheck.ErrCorrupt

// treeHead is a tree size and root.
type treeHead struct {
	size uint64
	root []byte
}

// checkStorage checks, before Tessera starts, that the data directory
// reproduces the last signed tree head, and returns it (nil for a new
// log).
//
// The last signed tree head is the published checkpoint, whose signature
// is verified when cfg.Verifier is set, or, beyond it, the tree state
// Tessera signs next (it signs nothing else). The stored right edge must
// reproduce the checkpoint's root, the tree state's root must be the
// tiles' root at its size, and the tiles must prove the tree state
// consistent with the checkpoint. With cfg.FullCheck, every tile is also
// recomputed from the entries (tilecheck.CheckAll).
//
// SPEC(design.md 17): the embedded backend never signs a checkpoint that
// does not extend the last one it signed.
func checkStorage(ctx context.Context, cfg *Config) (*treeHead, error) {
	dir := cfg.Dir
	cpRaw, cpErr := os.ReadFile(filepath.Join(dir, layout.CheckpointPath))
	tsRaw, tsErr := os.ReadFile(filepath.Join(dir, treeStatePath))
	switch {
	case errors.Is(cpErr, fs.ErrNotExist) && errors.Is(tsErr, fs.ErrNotExist):
		return nil, nil // a new log
	case cpErr != nil && !errors.Is(cpErr, fs.ErrNotExist):
		return nil, fmt.Errorf("posix log: reading %s: %w", layout.CheckpointPath, cpErr)
	case tsErr != nil && !errors.Is(tsErr, fs.ErrNotExist):
		return nil, fmt.Errorf("posix log: reading %s: %w", treeStatePath, tsErr)
	case tsErr != nil:
		return nil, &tilecheck.CorruptError{Files: []string{treeStatePath}, Detail: "missing, while a checkpoint is published"}
	}
	var ts struct {
		Size uint64 `json:"size"`
		Root []byte `json:"root"`
	}
	if err := json.Unmarshal(tsRaw, &ts); err != nil || len(ts.Root) != 32 {
		return nil, &tilecheck.CorruptError{Files: []string{treeStatePath}, Detail: fmt.Sprintf("not a tree state (%v)", err)}
	}
	state := &treeHead{ts.Size, ts.Root}
	f := tilecheck.Tiles{F: client.FileFetcher{Root: dir}, Latest: state.size}

	var signed *treeHead
	if cpErr == nil {
		cp, err := parseOwnCheckpoint(cpRaw, cfg)
		if err != nil {
			return nil, &tilecheck.CorruptError{Files: []string{layout.CheckpointPath}, Detail: err.Error()}
		}
		signed = &treeHead{cp.Size, cp.Hash}
		if state.size < signed.size {
			return nil, &tilecheck.CorruptError{Files: []string{treeStatePath}, Detail: fmt.Sprintf("tree state of size %d is behind the signed checkpoint of size %d", state.size, signed.size)}
		}
		if err := tilecheck.CheckRoot(ctx, f, signed.size, signed.root); err != nil {
			return nil, fmt.Errorf("posix log: %s does not reproduce the signed checkpoint: %w", dir, err)
		}
		if state.size == signed.size && !bytes.Equal(state.root, signed.root) {
			return nil, &tilecheck.CorruptError{Files: []string{treeStatePath}, Detail: fmt.Sprintf("root %x differs from the signed checkpoint's %x at size %d, which the tiles reproduce", state.root, signed.root, signed.size)}
		}
	}
	if signed == nil || state.size > signed.size {
		if err := tilecheck.CheckRoot(ctx, f, state.size, state.root); err != nil {
			var ce *tilecheck.CorruptError
			if errors.As(err, &ce) {
				ce.Files = append(ce.Files, treeStatePath)
			}
			return nil, fmt.Errorf("posix log: the tiles in %s do not reproduce the tree state: %w", dir, err)
		}
	}
	if signed != nil {
		if err := tilecheck.CheckConsistent(ctx, f, signed.size, signed.root, state.size, state.root); err != nil {
			return nil, fmt.Errorf("posix log: the tree state in %s does not extend the signed checkpoint: %w", dir, err)
		}
	}
	if cfg.FullCheck {
		if err := tilecheck.CheckAll(ctx, f, state.size, state.root, nil); err != nil {
			return nil, fmt.Errorf("posix log: full check of %s: %w", dir, err)
		}
	}
	if signed == nil {
		// Never signed (the witnesses were down at the first start): the
		// empty tree is the only thing anybody may have seen.
		return nil, nil
	}
	return signed, nil
}

// parseOwnCheckpoint parses the checkpoint file, verifying the log's
// signature when a verifier is configured.
func parseOwnCheckpoint(raw []byte, cfg *Config) (*fmtlog.Checkpoint, error) {
	if cfg.Verifier != nil {
		cp, _, err := log.ParseCheckpoint(raw, cfg.Origin, cfg.Verifier)
		return cp, err
	}
	body, _, ok := bytes.Cut(raw, []byte("\n\n"))
	if !ok {
		return nil, errors.New("no signature block")
	}
	var cp fmtlog.Checkpoint
	if _, err := cp.Unmarshal(append(body, '\n')); err != nil {
		return nil, err
	}
	if cp.Origin != cfg.Origin {
		return nil, fmt.Errorf("origin %q, want %q", cp.Origin, cfg.Origin)
	}
	return &cp, nil
}

// guardSigner is the checkpoint signer handed to Tessera. Before every
// signature it checks that the tree head it signs extends the last one
// signed, with a consistency proof built from the tiles
// (tilecheck.CheckConsistent); if not, it refuses, records the fault on
// the Log (which then refuses Appends and reports it, see Log.Fault) and
// signs nothing more.
//
// SPEC(design.md 17): the embedded backend never signs a checkpoint that
// does not extend the last one it signed.
type guardSigner struct {
	note.Signer
	origin string
	tiles  tilecheck.Fetcher
	fault  func(error)

	mu   sync.Mutex
	last *treeHead // nil before the first signature of a new log
	err  error     // the first refusal; every later Sign fails with it
	hold error     // while set, Sign refuses (witnesscheck.go)
}

// release lets the guard sign (the witnesses confirmed the checkpoint).
func (g *guardSigner) release() {
	g.mu.Lock()
	g.hold = nil
	g.mu.Unlock()
}

// Sign implements note.Signer. Tessera passes the checkpoint body.
func (g *guardSigner) Sign(msg []byte) ([]byte, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return nil, g.err
	}
	if g.hold != nil {
		// SPEC(design.md 17): never a fork (a restored log behind its witnesses)
		return nil, g.hold
	}
	if err := g.check(msg); err != nil {
		g.err = fmt.Errorf("posix log: refusing to sign: %w", err)
		g.fault(g.err)
		return nil, g.err
	}
	return g.Signer.Sign(msg)
}

func (g *guardSigner) check(msg []byte) error {
	var cp fmtlog.Checkpoint
	if _, err := cp.Unmarshal(msg); err != nil {
		return fmt.Errorf("not a checkpoint: %w", err)
	}
	if cp.Origin != g.origin {
		return fmt.Errorf("checkpoint origin %q, want %q", cp.Origin, g.origin)
	}
	ctx := context.Background()
	f := tilecheck.Tiles{F: g.tiles, Latest: cp.Size}
	var err error
	if g.last == nil {
		err = tilecheck.CheckRoot(ctx, f, cp.Size, cp.Hash)
	} else {
		err = tilecheck.CheckConsistent(ctx, f, g.last.size, g.last.root, cp.Size, cp.Hash)
	}
	if err != nil {
		return err
	}
	g.last = &treeHead{cp.Size, bytes.Clone(cp.Hash)}
	return nil
}

// IntegratedSize implements [log.Integrator]: the size in Tessera's tree
// state, which covers every acknowledged entry (see Append) and which its
// publisher signs next, within a CheckpointInterval.
func (l *Log) IntegratedSize(ctx context.Context) (uint64, error) {
	raw, err := os.ReadFile(filepath.Join(l.cfg.Dir, treeStatePath))
	if err != nil {
		return 0, fmt.Errorf("posix log: %w", err)
	}
	var ts struct {
		Size uint64 `json:"size"`
	}
	if err := json.Unmarshal(raw, &ts); err != nil {
		return 0, &tilecheck.CorruptError{Files: []string{treeStatePath}, Detail: err.Error()}
	}
	return ts.Size, nil
}

var _ log.Integrator = (*Log)(nil)
