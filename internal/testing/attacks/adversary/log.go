package adversary

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/log"
)

// Substitute decides whether entry is the one to replace and returns its
// replacement.
type Substitute func(entry []byte) (replacement []byte, ok bool)

// Substitution is what a [Log] did: the entry it replaced, its
// replacement, and the log index the replacement got.
type Substitution struct {
	Index            uint64
	Honest, Replaced []byte
}

// Log is a malicious log backend around the honest one: the directory
// writes through it as usual, and an armed [Substitute] swaps one entry of
// a later Append for the adversary's entry before it reaches the log. The
// number and order of entries are kept, so the directory's index checks
// (design.md 7) still pass: the log holds an entry the directory's map and
// state never saw, which is what an operator does when it forces a change
// past its own checks (A8) or publishes a map root not derived from the
// logged changes (A6).
//
// Log is safe for concurrent use; mu guards the fields below it.
type Log struct {
	log.Log

	mu    sync.Mutex
	armed Substitute
	done  []Substitution
}

// NewLog wraps l.
func NewLog(l log.Log) *Log { return &Log{Log: l} }

// Arm makes the next Append that holds an entry matching s replace it (once).
func (l *Log) Arm(s Substitute) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.armed = s
}

// Armed reports whether a substitution is still waiting.
func (l *Log) Armed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.armed != nil
}

// Substitutions returns what the log replaced so far.
func (l *Log) Substitutions() []Substitution {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Substitution(nil), l.done...)
}

// Append substitutes the armed entry, if present, then appends.
func (l *Log) Append(ctx context.Context, entries [][]byte) ([]uint64, error) {
	l.mu.Lock()
	s := l.armed
	l.mu.Unlock()
	pos := -1
	var repl []byte
	if s != nil {
		for i, e := range entries {
			if r, ok := s(e); ok {
				pos, repl = i, r
				break
			}
		}
	}
	if pos < 0 {
		return l.Log.Append(ctx, entries)
	}
	out := append([][]byte(nil), entries...)
	out[pos] = repl
	idx, err := l.Log.Append(ctx, out)
	if err != nil {
		return idx, err
	}
	l.mu.Lock()
	l.armed = nil
	l.done = append(l.done, Substitution{Index: idx[pos], Honest: entries[pos], Replaced: repl})
	l.mu.Unlock()
	return idx, nil
}

// ChangeOf returns a [Substitute] matching the change record of index at
// version, replaced by the result of f (given the honest record).
func ChangeOf(index [32]byte, version uint64, f func(honest *api.ChangeRecord) []byte) Substitute {
	return func(e []byte) ([]byte, bool) {
		en, err := api.ParseEntry(e)
		if err != nil {
			return nil, false
		}
		rec, ok := en.(*api.ChangeRecord)
		if !ok || rec.Index != index || rec.Version != version {
			return nil, false
		}
		return f(rec), true
	}
}

// checkpointSize reads the tree size of a checkpoint note without
// verifying it (the adversary knows its own checkpoints).
func checkpointSize(note []byte) (uint64, error) {
	lines := strings.SplitN(string(note), "\n", 3)
	if len(lines) < 3 {
		return 0, errors.New("adversary: malformed checkpoint")
	}
	n, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("adversary: malformed checkpoint size: %w", err)
	}
	return n, nil
}
