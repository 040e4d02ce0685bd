package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"time"

	"github.com/keytrans/kt/log"
)

// splitView plays the directory's half of a split view (attack A4): with
// the directory's own log key, it signs a checkpoint of the log's current
// size over another root, the checkpoint a directory would show a victim
// it keeps on a forked history, and writes it to out. Nothing is changed
// in the directory: it is what the operator, holding the key, can always
// do; the quickstart shows that an auditor shown it turns it into
// evidence.
func splitView(ctx context.Context, cfg *Config, out io.Writer) error {
	keyFile := filepath.Join(cfg.DataDir, "ktd", "log.key")
	signer, verifier, err := log.LoadOrCreateSigner(keyFile, origin)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+cfg.HTTPListen+"/log/v1/checkpoint", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("the directory's checkpoint: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the directory's checkpoint: %s", resp.Status)
	}
	cp, _, err := log.ParseCheckpoint(raw, origin, verifier)
	if err != nil {
		return fmt.Errorf("the directory's checkpoint: %w", err)
	}
	// Any other tree of the same size will do: a root that is not the
	// published one.
	root := sha256.Sum256(append([]byte("kt quickstart split view\n"), cp.Hash...))
	forged, err := log.SignCheckpoint(signer, origin, cp.Size, root[:])
	if err != nil {
		return err
	}
	_, err = out.Write(forged)
	return err
}
