package client_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/testkit"
)

// BenchmarkVerifyLookup measures the client's verification of one lookup
// of a handle with one X25519 device, in a map of about a million leaves
// and a log of about 65,000 entries:
//
//   - epoch-part: first contact, the answer carries the epoch checkpoint
//     with three cosignatures under a 2-of-3 policy (one log signature and
//     three cosignatures verified, plus the VRF and the map proof);
//   - trusted-epoch: the client already holds the epoch; VRF and map proof
//     only;
//   - trusted-epoch-hybrid: the same for a handle with an X25519 and an
//     MLKEM768-X25519 device;
//   - epoch-part-audited, trusted-epoch-audited: audit mode, the brief's
//     shape: the epoch checkpoint with two cosignatures and two audit
//     statements (2-of-2 audit policy), first contact and within the epoch.
//
// Besides ns/op (wall clock), it reports cpu-ns/op: the process's user and
// system CPU time per verification, which stays meaningful on a machine
// whose cores are shared.
//
// Run: go test -run '^$' -bench VerifyLookup -benchtime 2000x ./client
func BenchmarkVerifyLookup(b *testing.B) {
	f := newFixture(b)
	f.s.fill(1 << 20)
	filler := make([][]byte, 1<<16)
	for i := range filler {
		filler[i] = make([]byte, 240)
		rand.Read(filler[i])
	}
	if _, err := f.s.log.AppendUnchecked(filler); err != nil {
		b.Fatal(err)
	}
	now := t0.Add(3 * time.Second)
	f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
	first := f.s.lookup(bob, 0)
	res, err := client.VerifyLookup(f.p, nil, bob, first, now, nil)
	if err != nil {
		b.Fatal(err)
	}
	tr := res.Trusted
	within := f.s.lookup(bob, tr.Size)
	hybrid := f.s.lookup(alice, tr.Size)
	if within.Epoch != nil || len(res.Epoch.Cosignatures) != 3 {
		b.Fatal("unexpected bundle shape")
	}
	// A calibration point measured in the same run: one crypto/ed25519
	// verification, the brief's unit of client cost (40 µs per core).
	b.Run("baseline-ed25519-verify", func(b *testing.B) {
		pub, priv, _ := ed25519.GenerateKey(nil)
		msg := make([]byte, 200)
		sig := ed25519.Sign(priv, msg)
		cpu0 := int64(testkit.CPUTime())
		for b.Loop() {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("verify")
			}
		}
		b.ReportMetric(float64(int64(testkit.CPUTime())-cpu0)/float64(b.N), "cpu-ns/op")
	})
	// Audit mode (design.md 12.2 step 2.2), the brief's shape: the same
	// answer with two witness cosignatures (the third dropped; the policy
	// is 2 of 3) and two audit statements under a 2-of-2 audit policy.
	as := newAuditors(b, 2)
	pa := f.auditParams(b, auditPolicy(as, 2), client.Options{})
	audited := proto.Clone(first).(*ktpb.LookupResponse)
	audited.Epoch.Checkpoint = editSigs(audited.Epoch.Checkpoint, func(l []string) []string { return l[:len(l)-1] })
	audited.Epoch.Checkpoint = vouch(audited.Epoch.Checkpoint, t0.Add(2*time.Second), as...)
	resA, err := client.VerifyLookup(pa, nil, bob, audited, now, nil)
	if err != nil || len(resA.Epoch.AuditStatements) != 2 || len(resA.Epoch.Cosignatures) != 2 {
		b.Fatal("audited bundle: ", err)
	}
	for _, bc := range []struct {
		name   string
		p      *client.Params
		handle string
		tr     *client.Trusted
		resp   *ktpb.LookupResponse
	}{
		{"epoch-part", f.p, bob, nil, first},
		{"trusted-epoch", f.p, bob, tr, within},
		{"trusted-epoch-hybrid", f.p, alice, tr, hybrid},
		{"epoch-part-audited", pa, bob, nil, audited},
		{"trusted-epoch-audited", pa, bob, resA.Trusted, within},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cpu0 := int64(testkit.CPUTime())
			for b.Loop() {
				res, err := client.VerifyLookup(bc.p, bc.tr, bc.handle, bc.resp, now, nil)
				if err != nil {
					b.Fatal(err)
				}
				if res.Kind != api.AuthEnroll {
					b.Fatal("wrong result")
				}
			}
			// CPU time of the whole process per verification: unlike ns/op
			// it does not count time spent waiting for a core that other
			// processes hold.
			b.ReportMetric(float64(int64(testkit.CPUTime())-cpu0)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(proto.Size(bc.resp)), "resp-bytes")
		})
	}
}

// BenchmarkMonitorPoll measures an owner's monitoring poll of a handle
// that did not change, in a map of about a million leaves and a log of
// about 65,000 entries with a 2-of-3 witness policy (three cosignatures):
//
//   - same-epoch: the client already holds the epoch, so the answer is the
//     map proof only;
//   - new-epoch: a heartbeat epoch closed since the last poll, so the
//     answer also carries the epoch part with a consistency proof (the
//     usual case when polling every 60 s with a 10 s heartbeat).
//
// req-bytes and resp-bytes are the protobuf sizes of the MonitorRequest
// and MonitorResponse (the poll is one round trip); ns/op and cpu-ns/op
// are the cost of verifying the answer.
//
// Run: go test -run '^$' -bench MonitorPoll -benchtime 2000x ./client
func BenchmarkMonitorPoll(b *testing.B) {
	f := newFixture(b)
	f.s.fill(1 << 20)
	filler := make([][]byte, 1<<16)
	for i := range filler {
		filler[i] = make([]byte, 240)
		rand.Read(filler[i])
	}
	if _, err := f.s.log.AppendUnchecked(filler); err != nil {
		b.Fatal(err)
	}
	f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
	now := t0.Add(3 * time.Second)
	own := client.OwnKeys{Device: f.b1.pub()}
	first, err := client.VerifyMonitor(f.p, nil, &client.MonitorState{Index: f.s.handle(bob).index}, f.s.monitor(bob, 0, 0), own, now)
	if err != nil {
		b.Fatal(err)
	}
	st, tr := first.State, first.Trusted
	same := f.s.monitor(bob, st.Version, tr.Size)
	f.s.closeEpoch(epochOpts{ts: t0.Add(2500 * time.Millisecond)})
	next := f.s.monitor(bob, st.Version, tr.Size)
	if same.Epoch != nil || next.Epoch == nil || len(next.Epoch.ConsistencyProof) == 0 {
		b.Fatal("unexpected answer shape")
	}
	for _, bc := range []struct {
		name string
		resp *ktpb.MonitorResponse
	}{{"same-epoch", same}, {"new-epoch", next}} {
		b.Run(bc.name, func(b *testing.B) {
			req := &ktpb.MonitorRequest{Index: st.Index[:], KnownVersion: st.Version, KnownSize: tr.Size}
			// The owner's authorization (design.md 13.4), counted at its
			// size: a 32-byte key, a timestamp, a 64-byte signature.
			req.Auth = &ktpb.MonitorAuth{Signer: make([]byte, 32), TimestampMs: uint64(now.UnixMilli()), Signature: make([]byte, 64)}
			cpu0 := int64(testkit.CPUTime())
			for b.Loop() {
				res, err := client.VerifyMonitor(f.p, tr, st, bc.resp, own, now)
				if err != nil {
					b.Fatal(err)
				}
				if len(res.Changes) != 0 || len(res.Alerts) != 0 {
					b.Fatal("wrong result")
				}
			}
			b.ReportMetric(float64(int64(testkit.CPUTime())-cpu0)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(proto.Size(req)), "req-bytes")
			b.ReportMetric(float64(proto.Size(bc.resp)), "resp-bytes")
		})
	}
}

// BenchmarkAccountKeyImport measures opening an account key export made
// with ExportAccountKey's parameters (Argon2id t=3, 64 MiB, 4 lanes, then
// AES-256-GCM): the cost a passphrase guess costs an attacker, and what the
// owner waits on import. It reports cpu-ns/op besides ns/op.
//
// Run: go test -run '^$' -bench AccountKeyImport -benchtime 20x ./client
func BenchmarkAccountKeyImport(b *testing.B) {
	pass := []byte("correct horse battery staple")
	pt := append([]byte{1}, make([]byte, 32)...)
	pt = append(pt, 0, 3, 'a', '/', 'b', 0, 0, 0, 7, 0, 0)
	exp := client.SealAccountExportDefaultForTest(pt, pass)
	cpu0 := int64(testkit.CPUTime())
	b.ResetTimer()
	for range b.N {
		if _, _, _, err := client.OpenAccountExportForTest(exp, pass); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(int64(testkit.CPUTime())-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkDecrypt measures Client.Decrypt of a format-2 envelope from
// Alice to Bob (X25519 suite, 100-byte message) on a real deployment (gRPC
// directory and witness in this process), with Alice's device set already
// verified and cached for Bob's trusted epoch (design.md 12.3 receiving
// step 2): envelope parsing, the sender checks, the signature, the replay
// cache, HPKE open, and storing the message ID, on client.MemStore (a
// FileStore adds its write and fsync). The replay cache grows by one ID
// per iteration, so -benchtime sets its size:
//
//   - replay-in-state: the replay cache inside the client state (Config.
//     Replay nil), decoded and re-encoded with the whole JSON state;
//   - replay-store: the replay cache in its own Store (Config.Replay).
//
// The envelopes are made before the timer starts; the first, outside the
// timer, fills the sender cache. cpu-ns/op is the process's CPU per
// decryption, the in-process directory's epochs included.
//
// Run: go test -run '^$' -bench Decrypt -benchtime 2000x ./client
func BenchmarkDecrypt(b *testing.B) {
	b.Run("replay-in-state", func(b *testing.B) { benchDecrypt(b, client.Config{}) })
	b.Run("replay-store", func(b *testing.B) { benchDecrypt(b, client.Config{Replay: &client.MemStore{}}) })
}

func benchDecrypt(b *testing.B, cfg client.Config) {
	e := newNetEnv(b)
	alice := e.device(client.Config{})
	bob := e.device(cfg)
	e.enroll(alice, "alice@example.com", false)
	e.enroll(bob, "bob@example.com", false)
	st, err := bob.State(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	bobDev := st.Device.ID
	const n = 2000
	msgs := make([][]byte, 0, n+1)
	for range n + 1 {
		envs, err := alice.Encrypt(b.Context(), "bob@example.com", make([]byte, 100))
		if err != nil {
			b.Fatal(err)
		}
		for _, env := range envs {
			if env.Device == bobDev {
				raw, err := env.MarshalBinary()
				if err != nil {
					b.Fatal(err)
				}
				msgs = append(msgs, raw)
			}
		}
	}
	if len(msgs) != n+1 {
		b.Fatalf("%d envelopes for Bob's device, want %d", len(msgs), n+1)
	}
	if _, _, err := bob.Decrypt(b.Context(), msgs[0]); err != nil {
		b.Fatal(err)
	}
	msgs = msgs[1:]
	if b.N > len(msgs) {
		b.Fatalf("at most %d iterations (-benchtime %dx)", len(msgs), len(msgs))
	}
	i := 0
	cpu0 := int64(testkit.CPUTime())
	for b.Loop() {
		pt, env, err := bob.Decrypt(b.Context(), msgs[i])
		if err != nil || len(pt) != 100 || env.From != "mailto:alice@example.com" {
			b.Fatalf("Decrypt: %v", err)
		}
		i++
	}
	b.ReportMetric(float64(int64(testkit.CPUTime())-cpu0)/float64(b.N), "cpu-ns/op")
}
