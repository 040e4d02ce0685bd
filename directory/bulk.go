package directory

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/keytrans/kt/api"
)

// BulkHandle is one handle for [Directory.BulkEnroll] to enroll.
type BulkHandle struct {
	// Handle is the handle, normalised by BulkEnroll.
	Handle string
	// Set is the handle's first device set; it must contain Signer's key.
	Set *api.DeviceSet
	// Signer signs the enrollment record (a device key in Set).
	Signer ed25519.PrivateKey
}

// bulkChunk is the number of enrollments BulkEnroll submits as one group.
var bulkChunk = 4096 // a variable for tests

// BulkEnroll enrolls n new handles, gen(i) giving the i-th, as fast as the
// machine allows: it is the directory's bulk-load path, for benchmarks at
// millions of handles and for seeding a new deployment, where enrolling
// through the API (a credential, a round trip and a signature check per
// handle) is far too slow.
//
// What it writes is exactly what enrollments through Enroll write: for
// each handle a kind-1 change record with the handle's VRF output as its
// index, a commitment to the device set under a fresh random opening, the
// device set's authorizers, and Signer's signature; the payload is synced
// to the store before the record is appended, the records go through the
// sequencer in groups of up to 4096, and epochs close as usual. So the log
// is genuine: a monitor or auditor replaying it sees ordinary
// enrollments, and lookups of the handles carry the usual proofs.
//
// What it skips, because the caller is the operator building the records
// rather than a client presenting them: the enrollment credential, the
// request size limits, and re-verifying the signature of every record it
// just made (the first record of each group is checked against the rules
// in full, so a gen that returns a Signer outside Set fails early). The
// VRF evaluations and signatures are computed on every core.
//
// Every handle must be new (not enrolled before, and not twice in one
// call); otherwise the group holding it fails and BulkEnroll returns the
// error, with the groups before it enrolled. progress, if not nil, is
// called after each group with the number of handles enrolled so far,
// from one goroutine at a time.
func (d *Directory) BulkEnroll(ctx context.Context, n int, gen func(i int) BulkHandle, progress func(done int)) error {
	workers := runtime.GOMAXPROCS(0)
	chunks := (n + bulkChunk - 1) / bulkChunk
	var next atomic.Int64
	done := 0 // under mu
	var mu sync.Mutex
	var first error
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
		next.Store(int64(chunks)) // stop the others
	}
	var wg sync.WaitGroup
	// Two builders per core: one builds its group while the other's
	// group is being committed.
	for range 2 * workers {
		wg.Go(func() {
			for {
				ci := int(next.Add(1)) - 1
				if ci >= chunks || ctx.Err() != nil {
					return
				}
				lo, hi := ci*bulkChunk, min(n, (ci+1)*bulkChunk)
				cs, err := d.bulkChunk(lo, hi, gen)
				if err != nil {
					fail(err)
					return
				}
				if _, err := d.submit(ctx, cs); err != nil {
					fail(fmt.Errorf("directory: bulk enrollment of handles [%d, %d): %w", lo, hi, err))
					return
				}
				if progress != nil {
					mu.Lock()
					done += hi - lo
					progress(done)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// bulkChunk builds the checked enrollments of handles [lo, hi).
func (d *Directory) bulkChunk(lo, hi int, gen func(i int) BulkHandle) ([]*checked, error) {
	cs := make([]*checked, 0, hi-lo)
	seen := make(map[[32]byte]bool, hi-lo)
	for i := lo; i < hi; i++ {
		bh := gen(i)
		handle, err := normalize(bh.Handle)
		if err != nil {
			return nil, fmt.Errorf("directory: bulk handle %d: %w", i, err)
		}
		ds, err := bh.Set.MarshalBinary()
		if err != nil {
			return nil, wrapf(ErrInvalidArgument, err, "bulk handle %d (%s): device set", i, handle)
		}
		index, proof := d.vrfKeys().cur.Prove(api.VRFInput(handle))
		if seen[index] {
			return nil, errorf(ErrInvalidArgument, "bulk handle %d (%s) appears twice", i, handle)
		}
		seen[index] = true
		c := &checked{handle: handle, vrf: &vrfEntry{index: index, proof: proof}, vrfNew: true, ds: ds, account: bh.Set.AccountID}
		rand.Read(c.opening[:])
		c.rec = &api.ChangeRecord{
			Index:       index,
			Version:     1,
			Commitment:  api.Commit(c.opening, index, 1, ds),
			Kind:        api.AuthEnroll,
			Authorizers: bh.Set.Authorizers(),
		}
		c.rec.Sign(d.cfg.Origin, bh.Signer)
		if c.recBytes, err = c.rec.MarshalBinary(); err != nil {
			return nil, wrapf(ErrInvalidArgument, err, "bulk handle %d (%s): change record", i, handle)
		}
		c.leaf = api.LeafHash(c.recBytes)
		// The handler's verdict, as Enroll would record it: checked
		// against "no state" (the sequencer re-checks in full if the
		// handle turns out to exist).
		if i == lo {
			if _, err := api.OpenCommitment(c.rec, c.opening, c.ds); err != nil {
				return nil, wrapf(ErrInvalidArgument, err, "bulk handle %d (%s): device set and opening", i, handle)
			}
			if err := d.checkState(c, &prevState{}); err != nil {
				return nil, fmt.Errorf("directory: bulk handle %d (%s): %w", i, handle, err)
			}
		}
		cs = append(cs, c)
	}
	return cs, nil
}
