package replay_test

import (
	"context"
	"fmt"

	"github.com/keytrans/kt/auditor/replay"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/ktlog"
)

// Example replays a whole log from its read API (here an in-memory log;
// logapi.NewClient or a log backend serve the same interface), saves the
// state, and resumes later from the saved state alone.
func Example() {
	ctx := context.Background()
	k := newLogKey(nil)
	b := ktlog.New(origin)
	b.Honest(100, 10)
	l := conformance.NewMemoryLog(origin, k.s)
	l.Append(ctx, b.Entries())
	cp, _ := l.Checkpoint(ctx)

	cfg := replay.Config{Origin: origin, Verifier: k.v, RecoveryKey: b.RecoveryKey()}
	e, _ := replay.New(cfg)
	vs, err := e.ReplayTo(ctx, l, cp, nil)
	fmt.Println(len(vs), "violations,", err, "error, clean up to", e.Clean().Size)

	saved, _ := e.MarshalBinary()
	// ... later, after more entries ...
	b.Honest(5, 5)
	l.Append(ctx, b.Entries()[e.Size():])
	cp, _ = l.Checkpoint(ctx)
	e, _ = replay.Restore(cfg, saved)
	vs, err = e.ReplayTo(ctx, l, cp, nil)
	fmt.Println(len(vs), "violations,", err, "error, clean up to", e.Clean().Size)
	// Output:
	// 0 violations, <nil> error, clean up to 222
	// 0 violations, <nil> error, clean up to 235
}
