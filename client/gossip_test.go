package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/evidence"
)

// fakeAuditor answers POST /kt/v1/gossip with a fixed status and body,
// and records what it was sent.
type fakeAuditor struct {
	mu     sync.Mutex
	status int
	body   []byte
	posts  [][]byte // bodies received since the last set
	path   string
}

func (a *fakeAuditor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	got, _ := io.ReadAll(r.Body)
	a.posts = append(a.posts, got)
	a.path = r.Method + " " + r.URL.Path
	w.WriteHeader(a.status)
	w.Write(a.body)
}

func (a *fakeAuditor) set(status int, body []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status, a.body, a.posts = status, body, nil
}

func (e *netEnv) sign(size uint64, root []byte) []byte {
	e.t.Helper()
	cp, err := log.SignCheckpoint(e.logSigner, netOrigin, size, root)
	if err != nil {
		e.t.Fatal(err)
	}
	return cp
}

func randomRoot() []byte {
	r := make([]byte, 32)
	rand.Read(r)
	return r
}

// TestGossip posts the trusted checkpoint to an auditor (a test server
// following design.md 15) and checks each kind of answer.
func TestGossip(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	aud := &fakeAuditor{}
	srv := httptest.NewServer(aud)
	defer srv.Close()
	alice := e.device(client.Config{Auditors: []string{srv.URL}})
	bob := e.device(client.Config{})
	e.enroll(bob, "bob@example.com", false)

	// An older log checkpoint, and Alice's trusted one after it.
	oldCp, err := e.logc.GetCheckpoint(ctx, &ktpb.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	oldParsed, _, _ := log.ParseCheckpoint(oldCp.Note, netOrigin, e.params.LogVerifier)
	e.awaitEpochAfter(oldParsed.Size)
	res, err := alice.Lookup(ctx, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	tr := res.Trusted
	e.awaitEpochAfter(tr.Size)
	newCp, err := e.logc.GetCheckpoint(ctx, &ktpb.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}

	sameSizeFork := e.sign(tr.Size, randomRoot())
	cases := []struct {
		name     string
		status   int
		body     []byte
		want     error
		evidence bool
	}{
		{"auditor ahead, consistent", 200, newCp.Note, nil, false},
		{"auditor behind, consistent", 200, oldCp.Note, nil, false},
		{"auditor at the same checkpoint", 200, tr.Checkpoint, nil, false},
		{"same size, other root", 200, sameSizeFork, client.ErrSplitView, true},
		{"auditor ahead on a fork", 200, e.sign(tr.Size+1000, randomRoot()), client.ErrSplitView, false},
		// The Log service serves Alice's tree, the larger one: its proofs
		// build the bundle.
		{"auditor behind on a fork", 200, e.sign(oldParsed.Size, randomRoot()), client.ErrSplitView, true},
		{"409 with evidence", 409, specBundle(canonical(t, tr.Checkpoint, sameSizeFork), nil), client.ErrSplitView, true},
		{"409 with evidence out of order", 409, specBundle(reverse(canonical(t, tr.Checkpoint, sameSizeFork)), nil), client.ErrGossip, false},
		{"409 with bogus evidence", 409, specBundle([2][]byte{tr.Checkpoint, tr.Checkpoint}, nil), client.ErrGossip, false},
		{"409 with garbage", 409, []byte("no"), client.ErrGossip, false},
		{"checkpoint not signed by the log", 200, []byte(fmt.Sprintf("%s\n%d\n%x\n\n", netOrigin, tr.Size, tr.Root)), client.ErrGossip, false},
		{"400", 400, []byte("bad checkpoint"), client.ErrGossip, false},
		{"404", 404, []byte("unknown origin"), client.ErrGossip, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			aud.set(c.status, c.body)
			rs, err := alice.Gossip(ctx)
			if len(rs) != 1 {
				t.Fatalf("%d results", len(rs))
			}
			if aud.path != "POST /kt/v1/gossip" || len(aud.posts) == 0 || string(aud.posts[0]) != string(tr.Checkpoint) {
				t.Fatalf("the auditor got %s with %q, want the trusted checkpoint", aud.path, aud.posts)
			}
			got := rs[0].Err
			if c.want == nil {
				if got != nil || err != nil {
					t.Fatalf("consistent answer: %v, %v", got, err)
				}
				return
			}
			if !errors.Is(got, c.want) {
				t.Fatalf("result %v, want %v", got, c.want)
			}
			var sv *client.SplitViewError
			if errors.Is(c.want, client.ErrSplitView) {
				if !errors.As(err, &sv) {
					t.Fatalf("Gossip returned %v, want the split view", err)
				}
				if c.evidence != (sv.Evidence != nil) {
					t.Fatalf("evidence %q", sv.Evidence)
				}
				// Evidence the client built is passed on to the auditor.
				wantPosts := 1
				if c.evidence && c.status == 200 {
					wantPosts = 2
				}
				if len(aud.posts) != wantPosts || (wantPosts == 2 && !bytes.Equal(aud.posts[1], sv.Evidence)) {
					t.Fatalf("the auditor got %d posts, want %d", len(aud.posts), wantPosts)
				}
				if sv.Evidence != nil {
					if _, err := client.VerifyEvidence(e.params, sv.Evidence); err != nil {
						t.Fatalf("evidence does not verify: %v", err)
					}
					// What the client reports is what an auditor checks.
					if _, err := evidence.Verify(sv.Evidence, e.params.LogVerifier); err != nil {
						t.Fatalf("log/evidence rejects the client's bundle: %v", err)
					}
				}
				if c.name == "same size, other root" && !bytes.Equal(sv.Evidence, specBundle(canonical(t, tr.Checkpoint, sameSizeFork), nil)) {
					t.Fatalf("the client's bundle is not the canonical encoding:\n%s", sv.Evidence)
				}
			} else if err != nil {
				t.Fatalf("Gossip returned %v for a non-conflict", err)
			}
		})
	}
	// Gossip never replaced the trusted checkpoint.
	st, _ := alice.State(ctx)
	if st.Trusted.Size != tr.Size {
		t.Fatalf("gossip changed the trusted checkpoint")
	}
}

// specBundle encodes a kt-evidence/v1 bundle from design.md 15's text,
// independently of log/evidence: the header line, two checkpoint lines
// and the proof lines, standard padded base64, each line ending in a
// newline.
func specBundle(cps [2][]byte, pr [][]byte) []byte {
	s := "kt-evidence/v1\n"
	for _, c := range cps {
		s += "checkpoint " + base64.StdEncoding.EncodeToString(c) + "\n"
	}
	for _, h := range pr {
		s += "proof " + base64.StdEncoding.EncodeToString(h) + "\n"
	}
	return []byte(s)
}

// canonical orders two checkpoint notes of one size as design.md 15 says:
// the one whose root sorts first (bytewise) is A.
func canonical(t *testing.T, x, y []byte) [2][]byte {
	t.Helper()
	root := func(n []byte) []byte {
		// The root is the third line of the note body.
		ls := strings.SplitN(string(n), "\n", 4)
		r, err := base64.StdEncoding.DecodeString(ls[2])
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if bytes.Compare(root(x), root(y)) > 0 {
		return [2][]byte{y, x}
	}
	return [2][]byte{x, y}
}

func reverse(p [2][]byte) [2][]byte { return [2][]byte{p[1], p[0]} }

// treeSource serves a testonly tree as an evidence.ProofSource.
type treeSource struct {
	tree *testonly.Tree
	data [][]byte
}

func newTree(n int, tag string) *treeSource {
	s := &treeSource{tree: testonly.New(rfc6962.DefaultHasher)}
	for i := range n {
		s.add(fmt.Appendf(nil, "%s %d", tag, i))
	}
	return s
}

func (s *treeSource) add(d []byte) { s.tree.AppendData(d); s.data = append(s.data, d) }

func (s *treeSource) Entries(_ context.Context, start, end uint64) ([][]byte, error) {
	return s.data[start:end], nil
}

func (s *treeSource) InclusionProof(_ context.Context, index, size uint64) ([][]byte, error) {
	return s.tree.InclusionProof(index, size)
}

func (s *treeSource) ConsistencyProof(_ context.Context, oldSize, newSize uint64) ([][]byte, error) {
	return s.tree.ConsistencyProof(oldSize, newSize)
}

// TestEvidenceCrossCheck checks that the client and log/evidence agree on
// kt-evidence/v1 byte for byte: bundles that log/evidence builds for real
// forks (the proof computed in tree B, design.md 15) equal an independent
// encoding of the spec and verify with client.VerifyEvidence; bundles
// encoded from the spec verify with both; the equal-size ordering rule,
// consistent pairs, proofs off B's root and non-canonical encodings are
// rejected by both with the same typed error.
func TestEvidenceCrossCheck(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	lk := e.params.LogVerifier
	both := func(t *testing.T, raw []byte, want error) {
		t.Helper()
		_, cerr := client.VerifyEvidence(e.params, raw)
		_, eerr := evidence.Verify(raw, lk)
		if want == nil {
			if cerr != nil || eerr != nil {
				t.Fatalf("client: %v; log/evidence: %v", cerr, eerr)
			}
			return
		}
		if !errors.Is(cerr, client.ErrEvidence) || !errors.Is(cerr, want) || !errors.Is(eerr, want) {
			t.Fatalf("client: %v; log/evidence: %v; want %v", cerr, eerr, want)
		}
	}
	for _, m := range []uint64{1, 3, 4, 7, 8, 13} {
		t.Run(fmt.Sprintf("fork at size %d of 20", m), func(t *testing.T) {
			b := newTree(20, "b")
			a := newTree(int(m)-1, "b")
			a.add([]byte("forked"))
			pr, err := b.tree.ConsistencyProof(m, 20)
			if err != nil {
				t.Fatal(err)
			}
			if m&(m-1) == 0 {
				pr = append([][]byte{b.tree.HashAt(m)}, pr...)
			}
			A, B := e.sign(m, a.tree.Hash()), e.sign(20, b.tree.Hash())
			want := specBundle([2][]byte{A, B}, pr)
			for _, args := range [][2][]byte{{A, B}, {B, A}} {
				built, err := evidence.Build(ctx, lk, args[0], args[1], b)
				if err != nil {
					t.Fatal(err)
				}
				if got := built.Marshal(); !bytes.Equal(got, want) {
					t.Fatalf("log/evidence built\n%s\nthe spec encodes\n%s", got, want)
				}
			}
			both(t, want, nil)
			f, _ := client.VerifyEvidence(e.params, want)
			if !bytes.Equal(f.RootAtA, b.tree.HashAt(m)) {
				t.Fatalf("RootAtA %x, want tree B's root at %d", f.RootAtA, m)
			}
			// A consistent pair proves nothing, and Build says so.
			A2 := e.sign(m, b.tree.HashAt(m))
			both(t, specBundle([2][]byte{A2, B}, pr), evidence.ErrNoFork)
			if _, err := evidence.Build(ctx, lk, A2, B, b); !errors.Is(err, evidence.ErrNoFork) {
				t.Fatalf("Build of a consistent pair: %v", err)
			}
			// A proof that does not reach B's root proves nothing.
			bad := append([][]byte(nil), pr...)
			bad[len(bad)-1] = randomRoot()
			both(t, specBundle([2][]byte{A, B}, bad), evidence.ErrProof)
			// The larger checkpoint first.
			both(t, specBundle([2][]byte{B, A}, pr), evidence.ErrOrder)
		})
	}
	t.Run("equal sizes", func(t *testing.T) {
		x, y := e.sign(9, randomRoot()), e.sign(9, randomRoot())
		c := canonical(t, x, y)
		both(t, specBundle(c, nil), nil)
		both(t, specBundle(reverse(c), nil), evidence.ErrOrder)
		both(t, specBundle([2][]byte{x, x}, nil), evidence.ErrNoFork)
		both(t, specBundle(c, [][]byte{randomRoot()}), evidence.ErrMalformed)
		for _, args := range [][2][]byte{{x, y}, {y, x}} {
			built, err := evidence.Build(ctx, lk, args[0], args[1], nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(built.Marshal(), specBundle(c, nil)) {
				t.Fatalf("Build(%d) is not the canonical order", len(args))
			}
		}
	})
	t.Run("encoding", func(t *testing.T) {
		x, y := e.sign(9, randomRoot()), e.sign(9, randomRoot())
		good := specBundle(canonical(t, x, y), nil)
		for name, raw := range map[string][]byte{
			"empty":                {},
			"other version":        bytes.Replace(good, []byte("/v1"), []byte("/v2"), 1),
			"no final newline":     good[:len(good)-1],
			"CRLF":                 bytes.ReplaceAll(good, []byte("\n"), []byte("\r\n")),
			"trailing blank line":  append(bytes.Clone(good), '\n'),
			"unpadded base64":      bytes.Replace(good, []byte("=\n"), []byte("\n"), 1),
			"one checkpoint":       specBundle([2][]byte{x, nil}, nil)[:len("kt-evidence/v1\ncheckpoint ")+len(base64.StdEncoding.EncodeToString(x))+1],
			"proof line too short": append(bytes.Clone(good), "proof AAAA\n"...),
		} {
			t.Run(name, func(t *testing.T) { both(t, raw, evidence.ErrMalformed) })
		}
	})
	t.Run("checkpoint of another log", func(t *testing.T) {
		other := newKeys(t).params(t)
		x, y := e.sign(9, randomRoot()), e.sign(9, randomRoot())
		if _, err := client.VerifyEvidence(other, specBundle(canonical(t, x, y), nil)); !errors.Is(err, evidence.ErrCheckpoint) {
			t.Fatalf("%v", err)
		}
	})
}

// TestGossipOnLookup: with Config.GossipOnLookup a lookup gossips each
// new trusted checkpoint once, before storing it; an auditor that fails
// without a conflict does not fail the lookup; off by default.
func TestGossipOnLookup(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	aud := &fakeAuditor{}
	srv := httptest.NewServer(aud)
	defer srv.Close()
	bob := e.device(client.Config{})
	e.enroll(bob, "bob@example.com", false)
	posts := func() int {
		aud.mu.Lock()
		defer aud.mu.Unlock()
		return len(aud.posts)
	}
	off, _ := e.newClient(nil, client.Config{Auditors: []string{srv.URL}})
	on, _ := e.newClient(nil, client.Config{Auditors: []string{srv.URL}, GossipOnLookup: true})
	cp, err := e.logc.GetCheckpoint(ctx, &ktpb.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	aud.set(200, cp.Note)
	if _, err := off.Lookup(ctx, "bob@example.com"); err != nil || posts() != 0 {
		t.Fatalf("off by default: %v, %d posts", err, posts())
	}
	r1, err := on.Lookup(ctx, "bob@example.com")
	if err != nil || posts() != 1 || string(aud.posts[0]) != string(r1.Trusted.Checkpoint) {
		t.Fatalf("first lookup: %v, %d posts", err, posts())
	}
	// A lookup in the same epoch does not gossip again; an auditor error
	// is not a lookup error.
	aud.set(500, []byte("down"))
	for {
		r, err := on.Lookup(ctx, "bob@example.com")
		if err != nil {
			t.Fatalf("lookup with the auditor down: %v", err)
		}
		if r.Trusted.Size == r1.Trusted.Size {
			if posts() != 0 {
				t.Fatalf("gossiped an already trusted checkpoint")
			}
			e.awaitEpochAfter(r1.Trusted.Size)
			continue
		}
		if posts() != 1 {
			t.Fatalf("a new checkpoint was gossiped %d times", posts())
		}
		break
	}
	// A conflicting answer fails the lookup and stores nothing.
	st, _ := on.State(ctx)
	e.awaitEpochAfter(st.Trusted.Size)
	aud.set(200, e.sign(st.Trusted.Size+1000, randomRoot()))
	if _, err := on.Lookup(ctx, "bob@example.com"); !errors.Is(err, client.ErrSplitView) {
		t.Fatalf("lookup with a conflicting auditor: %v", err)
	}
	if st2, _ := on.State(ctx); st2.Trusted.Size != st.Trusted.Size {
		t.Fatal("the checkpoint was stored despite the split view")
	}
}

// TestWatch runs the monitoring loop with gossip: a recovery change made
// while it runs is reported as an alert, and each poll gossips.
func TestWatch(t *testing.T) {
	e := newNetEnv(t)
	aud := &fakeAuditor{status: 200}
	srv := httptest.NewServer(aud)
	defer srv.Close()
	bob := e.device(client.Config{Auditors: []string{srv.URL}})
	e.enroll(bob, "bob@example.com", false)
	cp, err := e.logc.GetCheckpoint(t.Context(), &ktpb.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	aud.set(200, cp.Note) // behind or equal: consistent
	lax := e.device(client.Config{})

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type poll struct {
		alerts  int
		gossips int
		err     error
	}
	polls := make(chan poll, 100)
	done := make(chan error, 1)
	go func() {
		done <- bob.Watch(ctx, 50*time.Millisecond, func(rs []*client.MonitorReport, gs []client.GossipResult, err error) {
			p := poll{gossips: len(gs), err: err}
			for _, r := range rs {
				p.alerts += len(r.Alerts)
			}
			polls <- p
		})
	}()
	first := <-polls
	if first.err != nil || first.alerts != 0 || first.gossips != 1 {
		t.Fatalf("first poll: %+v", first)
	}
	e.recover(lax, "bob@example.com", func(s *api.DeviceSet) { addSorted(s, ghost(t)) })
	for deadline := time.After(netWait); ; {
		select {
		case p := <-polls:
			if p.err != nil {
				t.Fatalf("poll: %v", p.err)
			}
			if p.alerts == 0 {
				continue
			}
		case <-deadline:
			t.Fatal("no alert")
		}
		break
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch returned %v", err)
	}
}

// TestEvidenceEncoding: client.Evidence is the spec's encoding in the
// order given, byte for byte.
func TestEvidenceEncoding(t *testing.T) {
	a, b, h := []byte("note a\n"), []byte("note b\n"), randomRoot()
	if got, want := client.Evidence(a, b, [][]byte{h}), specBundle([2][]byte{a, b}, [][]byte{h}); !bytes.Equal(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}
