package attacks

import (
	"bytes"
	"context"
	"crypto/ed25519"

	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
)

// HarvestRefusal is one request of A12's harvester and the directory's
// answer to it.
type HarvestRefusal struct {
	Request string
	Code    codes.Code
}

// A12: a caller with nothing but network access reads every VRF index
// from the log and asks the directory's public gRPC API for each index's
// history, to harvest device sets, HPKE keys and account links. The
// directory serves openings and device sets only to a current authorizer
// of the index (design.md 13.4): the harvester's full Monitor requests,
// unsigned, signed with a key it made up, or claiming a real device key
// that it read from the log without its private key, are refused, and
// its records-only answers carry nothing the log does not. The owner's
// own monitoring keeps working.
func runA12(ctx context.Context, w *World, r *Result) error {
	d, err := w.Deploy(ctx, Options{})
	if err != nil {
		return err
	}
	alice1, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	alice2, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	bob1, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	if err := d.Enroll(ctx, alice1, alice, true); err != nil {
		return err
	}
	if err := d.Link(ctx, alice1, alice2, alice); err != nil {
		return err
	}
	if err := d.Enroll(ctx, bob1, bob, false); err != nil {
		return err
	}
	// What the harvester must not learn: Alice's and Bob's device sets.
	var secrets [][]byte
	var owners []*client.LookupResult
	for _, h := range []string{alice, bob} {
		res, err := bob1.Lookup(ctx, h)
		if err != nil {
			return fmt.Errorf("setup: lookup %s: %w", h, err)
		}
		owners = append(owners, res)
		for _, dev := range res.DeviceSet.Devices {
			secrets = append(secrets, dev.HPKEKey, dev.ID[:])
		}
		secrets = append(secrets, res.DeviceSet.AccountID[:])
		if res.DeviceSet.Account != nil {
			secrets = append(secrets, res.DeviceSet.Account.Key[:])
		}
	}

	// Control: the owner's monitoring, signed by its device key, gets the
	// full chain; anyone gets a records-only answer and the lookup of a
	// handle it names.
	reps, err := alice1.Monitor(ctx)
	if err != nil || len(reps) != 1 || len(reps[0].Changes) == 0 || len(reps[0].Alerts) != 0 {
		return fmt.Errorf("control: Alice's monitoring: %v, %+v", err, reps)
	}
	conn, err := grpc.NewClient(d.DirAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	dc, lc := ktpb.NewDirectoryClient(conn), ktpb.NewLogClient(conn)
	ro, err := dc.Monitor(ctx, &ktpb.MonitorRequest{Index: owners[0].Index[:], RecordsOnly: true})
	if err != nil || len(ro.GetChanges()) != int(owners[0].Version) {
		return fmt.Errorf("control: records-only Monitor of Alice's index: %v", err)
	}
	if lk, err := dc.Lookup(ctx, &ktpb.LookupRequest{Handle: bob}); err != nil || !bytes.Contains(lk.GetDeviceSet(), owners[1].DeviceSet.Devices[0].HPKEKey) {
		return fmt.Errorf("control: a lookup of a named handle: %v", err)
	}
	r.Control = "Alice's device monitors her handle (full chain, signed by its device key); anyone gets records-only answers and the lookup of a handle it names"

	// The harvest: every index in the log, every way of asking.
	t0 := time.Now()
	// The log's size, from the latest epoch record (the checkpoint's last
	// entry).
	ep0, err := dc.GetEpoch(ctx, &ktpb.GetEpochRequest{})
	if err != nil {
		return err
	}
	er, err := api.ParseEpochRecord(ep0.GetEpochRecord())
	if err != nil {
		return err
	}
	size := er.LogSize + 1
	signers := map[[32]byte][32]byte{} // index -> a key that signed one of its changes
	versions := map[[32]byte]uint64{}
	for start := uint64(0); start < size; {
		es, err := lc.GetEntries(ctx, &ktpb.GetEntriesRequest{Start: start, End: size})
		if err != nil {
			return fmt.Errorf("harvest: GetEntries: %w", err)
		}
		for _, raw := range es.GetEntries() {
			if c, err := api.ParseChangeRecord(raw); err == nil {
				signers[c.Index], versions[c.Index] = c.Signer, max(versions[c.Index], c.Version)
			}
		}
		start += uint64(len(es.GetEntries()))
	}
	if len(versions) < 2 {
		return fmt.Errorf("harvest: %d indices in the log, want Alice's and Bob's", len(versions))
	}
	_, made, _ := ed25519.GenerateKey(nil)
	var refusals []HarvestRefusal
	var leaked []string
	requests := 0
	look := func(what string, m proto.Message) {
		b, _ := proto.Marshal(m)
		for _, s := range secrets {
			if len(s) >= 16 && bytes.Contains(b, s) {
				leaked = append(leaked, what)
				return
			}
		}
	}
	for index, v := range versions {
		ts := uint64(time.Now().UnixMilli())
		madeSigner, madeSig := api.SignMonitor(Origin, made, index, 0, 0, ts)
		realSigner := signers[index]
		for _, a := range []struct {
			name string
			auth *ktpb.MonitorAuth
		}{
			{"unsigned", nil},
			{"signed by a key the harvester made", &ktpb.MonitorAuth{Signer: madeSigner[:], TimestampMs: ts, Signature: madeSig[:]}},
			{"claiming a device key read from the log", &ktpb.MonitorAuth{Signer: realSigner[:], TimestampMs: ts, Signature: madeSig[:]}},
		} {
			requests++
			resp, err := dc.Monitor(ctx, &ktpb.MonitorRequest{Index: index[:], Auth: a.auth})
			req := fmt.Sprintf("Monitor(%x…) %s", index[:4], a.name)
			if err == nil {
				look(req, resp)
				leaked = append(leaked, req+" answered")
				continue
			}
			refusals = append(refusals, HarvestRefusal{req, status.Code(err)})
		}
		for known := uint64(0); known < v; known++ {
			requests++
			resp, err := dc.Monitor(ctx, &ktpb.MonitorRequest{Index: index[:], KnownVersion: known, RecordsOnly: true})
			if err != nil {
				return fmt.Errorf("harvest: records-only Monitor: %w", err)
			}
			look(fmt.Sprintf("records-only Monitor(%x…, known %d)", index[:4], known), resp)
		}
	}
	requests += 2
	look("GetEpoch", ep0)
	bl, err := dc.BatchLookup(ctx, &ktpb.BatchLookupRequest{Handles: []string{carol, "dave@example.com"}})
	if err != nil {
		return err
	}
	look("BatchLookup of guessed handles", bl)
	if len(leaked) > 0 {
		return fmt.Errorf("the harvester learnt device sets or keys from: %v", leaked)
	}
	wantCodes := 0
	for _, f := range refusals {
		if f.Code == codes.Unauthenticated || f.Code == codes.PermissionDenied {
			wantCodes++
		}
	}
	if len(refusals) != 3*len(versions) || wantCodes != len(refusals) {
		return fmt.Errorf("refusals %+v: want Unauthenticated or PermissionDenied for each of %d full requests", refusals, 3*len(versions))
	}
	r.detect(Detection{
		By: ByDirectory, After: time.Since(t0), Polls: requests,
		Evidence: fmt.Sprintf("refused all %d full Monitor requests for the %d indices in the log (%s for %s); the records-only answers, GetEpoch and a BatchLookup of guessed handles carried no HPKE key, device ID, account ID or account key",
			len(refusals), len(versions), refusals[0].Code, refusals[0].Request),
		Err: status.Error(refusals[0].Code, refusals[0].Request), Detail: refusals,
	})

	// The owner's monitoring still works after the harvest.
	if reps, err := alice2.Monitor(ctx); err != nil || len(reps) != 1 || len(reps[0].Alerts) != 0 {
		return fmt.Errorf("Alice's second device's monitoring after the harvest: %v", err)
	}
	if _, err := alice1.Monitor(ctx); err != nil {
		return fmt.Errorf("Alice's monitoring after the harvest: %w", err)
	}
	r.note("Alice's two devices still monitor her handle after the harvest")
	return nil
}
