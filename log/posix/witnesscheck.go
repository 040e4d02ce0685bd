package posix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/keytrans/kt/log/witness"
)

// ErrBehindWitnesses is matched (errors.Is) when the log's signed
// checkpoint is behind, or beside, one its witnesses cosigned: the data
// directory was restored from an older backup. Signing the next checkpoint
// would fork the log, so the log refuses to start.
var ErrBehindWitnesses = errors.New("the log is behind what its witnesses cosigned")

// errWitnessCheckPending is what the guard answers Tessera's publisher
// until the witnesses confirmed the log's checkpoint.
var errWitnessCheckPending = errors.New("posix log: not signing until the witnesses confirm the last checkpoint (a restored data directory may be behind them)")

// checkWitnesses asks the policy's witnesses to cosign the log's current
// signed checkpoint raw, without its cosignatures, so that no new
// signature is made: a witness that cosigned a larger checkpoint answers
// 409 Conflict with its size (C2SP tlog-witness), one that cosigned
// another root at this size 409 too; either is ErrBehindWitnesses. Other
// failures (witnesses down) are returned as they are, for a retry.
//
// Issue 17 item 7.
func (l *Log) checkWitnesses(ctx context.Context, raw []byte) error {
	p, err := witness.ParsePolicy(l.cfg.WitnessPolicy)
	if err != nil {
		return err
	}
	w, err := witness.NewWitnesser(p, witness.WitnesserOpts{Client: l.cfg.HTTPClient, Timeout: l.cfg.WitnessTimeout, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	// Keep the log's own signature only (cosignatures already on the
	// checkpoint would satisfy the policy without asking).
	text, sigs, ok := strings.Cut(string(raw), "\n\n")
	if !ok {
		return fmt.Errorf("posix log: checkpoint: not a signed note")
	}
	var b strings.Builder
	b.WriteString(text + "\n\n")
	for line := range strings.Lines(sigs) {
		if f := strings.Fields(line); len(f) == 3 && f[1] == l.cfg.Signer.Name() {
			b.WriteString(line)
		}
	}
	// SPEC(design.md 9): a witness answers 409 with its size
	// SPEC(design.md 17): never a fork
	_, err = w.Witness(ctx, []byte(b.String()), l.ConsistencyProof)
	if errors.Is(err, witness.ErrConflict) {
		size, _ := checkpointSize(raw, l.cfg.Origin)
		return fmt.Errorf("%w: %w; the data directory's log (size %d) is older than what witnesses saw: restore a backup at least as recent as the witnesses' size, or start a new log (new origin and keys: docs/operations.md, Backups); signing now would fork the log", ErrBehindWitnesses, err, size)
	}
	return err
}

// confirmWitnesses runs checkWitnesses until it succeeds or finds the log
// behind (then the log faults); the guard signs nothing before.
func (l *Log) confirmWitnesses(raw []byte, guard *guardSigner) {
	for {
		ctx, cancel := context.WithTimeout(l.ctx, l.cfg.WitnessTimeout+time.Second)
		err := l.checkWitnesses(ctx, raw)
		cancel()
		switch {
		case err == nil:
			guard.release()
			return
		case errors.Is(err, ErrBehindWitnesses):
			l.setFault(err)
			return
		}
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}
