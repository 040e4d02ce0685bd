package witness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	fmtlog "github.com/transparency-dev/formats/log"
)

// Errors a witness can answer with, wrapped in a [*WitnessError].
var (
	// ErrUnknownLog: the witness does not know the checkpoint's origin (404).
	ErrUnknownLog = errors.New("witness does not know the log")
	// ErrLogSignature: no signature on the checkpoint verifies against the
	// log keys the witness trusts (403).
	ErrLogSignature = errors.New("witness rejects the log's signature")
	// ErrInvalidProof: the witness rejects the consistency proof (422).
	ErrInvalidProof = errors.New("witness rejects the consistency proof")
	// ErrConflict: the witness has cosigned a checkpoint of the same size
	// with a different root hash (409 without a size), or one larger than
	// the checkpoint. Either the log forked or it lost state: operators must
	// look.
	ErrConflict = errors.New("witness holds a conflicting checkpoint")
	// ErrBadResponse: the witness answered something the protocol does not
	// allow, or a cosignature that does not verify against its key.
	ErrBadResponse = errors.New("invalid response from witness")
	// ErrWitnessStatus: any other HTTP status, such as 400, 429 or 5xx.
	ErrWitnessStatus = errors.New("witness returned an error status")
)

// A WitnessError reports why one witness did not cosign.
type WitnessError struct {
	Witness string // the witness's name in the policy
	URL     string // the add-checkpoint URL
	Status  int    // the last HTTP status, or 0 when there was none
	Err     error
}

func (e *WitnessError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("witness %s (%s): HTTP %d: %v", e.Witness, e.URL, e.Status, e.Err)
	}
	return fmt.Sprintf("witness %s (%s): %v", e.Witness, e.URL, e.Err)
}

func (e *WitnessError) Unwrap() error { return e.Err }

// Defaults of the optional [WitnesserOpts] fields.
const (
	// DefaultTimeout bounds one round of requests to the witnesses for one
	// checkpoint: here each witness's requests, which run in parallel, and
	// for the posix backend Tessera's whole round (log/posix). One value for
	// both backends and ktd's witness.timeout. 10s rather than the 5s of
	// Tessera's default: a round may need two exchanges with a witness (old
	// size 0, then a resync after 409 Conflict, each possibly over a fresh
	// TLS connection to a distant witness), and a round that succeeds ends
	// as soon as the quorum is met, so the bound only matters when a quorum
	// cannot be met, and then no checkpoint is published either way.
	DefaultTimeout = 10 * time.Second
	// DefaultMaxAttempts bounds the requests to one witness for one
	// checkpoint (each 409 Conflict that reports a different size costs
	// one).
	DefaultMaxAttempts = 3
)

// ProofFunc returns the RFC 6962 consistency proof between the trees of sizes
// oldSize and newSize, 0 < oldSize < newSize. [log.Reader.ConsistencyProof]
// has this shape.
type ProofFunc func(ctx context.Context, oldSize, newSize uint64) ([][]byte, error)

// WitnesserOpts are the optional settings of a [Witnesser].
type WitnesserOpts struct {
	// Client sends the requests. Nil means a client with Go's default
	// transport. Its own Timeout, if any, applies on top of Timeout.
	Client *http.Client
	// Timeout bounds each request to one witness, including a resync after
	// 409 Conflict. Zero means DefaultTimeout.
	Timeout time.Duration
	// MaxAttempts bounds the requests to one witness for one checkpoint:
	// each 409 Conflict that reports a different size costs one. Zero means
	// DefaultMaxAttempts.
	MaxAttempts int
	// Logger receives a line per failed or resynchronised witness. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// Witnesser collects cosignatures on a log's checkpoints from the witnesses
// of a policy, with the C2SP tlog-witness protocol.
//
// It remembers, for each witness, the size of the latest checkpoint that the
// witness cosigned, so that it sends the consistency proof from that size.
// Before the first answer it sends "old 0", which a witness that already
// knows the log answers with 409 Conflict and its size; the Witnesser then
// retries with the right proof.
//
// A Witnesser is safe for concurrent use, but a log should witness its
// checkpoints one at a time and in order: witnesses only accept growing
// checkpoints.
type Witnesser struct {
	policy      *Policy
	client      *http.Client
	timeout     time.Duration
	maxAttempts int
	logger      *slog.Logger
	targets     []*target // the witnesses the quorum refers to
}

// target is one witness the Witnesser sends checkpoints to.
type target struct {
	w   *Witness
	url string

	mu    sync.Mutex // guards size and known
	size  uint64     // the size of the latest checkpoint the witness cosigned
	known bool       // whether size is known
}

const maxResponseBytes = 64 << 10

// NewWitnesser returns a Witnesser for the witnesses the policy's quorum
// refers to. Every one of them needs a URL; it fails otherwise, since a
// quorum that counts on an unreachable witness may never be met.
func NewWitnesser(p *Policy, opts WitnesserOpts) (*Witnesser, error) {
	if opts.Timeout < 0 || opts.MaxAttempts < 0 {
		return nil, errors.New("witnesser: negative timeout or attempts")
	}
	w := &Witnesser{
		policy:      p,
		client:      opts.Client,
		timeout:     opts.Timeout,
		maxAttempts: opts.MaxAttempts,
		logger:      opts.Logger,
	}
	if w.client == nil {
		w.client = &http.Client{}
	}
	if w.timeout == 0 {
		w.timeout = DefaultTimeout
	}
	if w.maxAttempts == 0 {
		w.maxAttempts = DefaultMaxAttempts
	}
	if w.logger == nil {
		w.logger = slog.Default()
	}
	var missing []string
	for i, rel := range p.relevant() {
		if !rel {
			continue
		}
		pw := p.witnesses[i]
		if pw.URL == "" {
			missing = append(missing, pw.Name)
			continue
		}
		u, err := url.Parse(pw.URL)
		if err != nil {
			return nil, fmt.Errorf("witness %s: %w", pw.Name, err)
		}
		// SPEC(tlog-witness): "POST <submission prefix>/add-checkpoint"
		w.targets = append(w.targets, &target{w: pw, url: u.JoinPath("add-checkpoint").String()})
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("witnesser: the quorum needs witnesses without a URL: %s", strings.Join(missing, ", "))
	}
	return w, nil
}

// Witness sends a signed checkpoint to every witness of the quorum in
// parallel, and returns the checkpoint with the cosignatures it received
// (verified, one line per witness, after the signatures already on it) as
// soon as they satisfy the policy; requests still running are then
// cancelled. proof supplies consistency proofs ending at the checkpoint's
// size; it is called at most once per old size and may be called
// concurrently.
//
// When the policy cannot be satisfied it returns a [*PolicyError] whose
// Failures say why each failing witness failed.
//
// SPEC(design.md 9)
func (w *Witnesser) Witness(ctx context.Context, signed []byte, proof ProofFunc) ([]byte, error) {
	n, err := parseNote(signed)
	if err != nil {
		return nil, err
	}
	var cp fmtlog.Checkpoint
	if _, err := cp.Unmarshal([]byte(n.text)); err != nil {
		return nil, fmt.Errorf("witnesser: not a checkpoint: %w", err)
	}
	// Cosignatures already on the checkpoint count (one per witness).
	have := w.policy.verify(n)
	if slices.Contains(have.invalid, true) {
		return nil, w.policy.policyError(have)
	}
	if w.policy.satisfied(func(i int) bool { return have.best[i] != nil }) {
		return signed, nil
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	proofs := &proofCache{ctx: ctx, f: proof, newSize: cp.Size, results: make(map[uint64]func() ([][]byte, error))}

	type result struct {
		t   *target
		cs  *Cosignature
		err *WitnessError
	}
	results := make(chan result, len(w.targets))
	pending := make([]bool, len(w.policy.witnesses))
	started := 0
	for _, t := range w.targets {
		if have.best[t.w.index] != nil {
			continue
		}
		pending[t.w.index] = true
		started++
		go func() {
			cs, err := w.update(ctx, t, signed, n.text, cp.Size, proofs)
			results <- result{t, cs, err}
		}()
	}

	got := have.best
	var failures []*WitnessError
	for range started {
		r := <-results
		pending[r.t.w.index] = false
		if r.err != nil {
			w.logger.WarnContext(ctx, "witness did not cosign", "witness", r.t.w.Name, "size", cp.Size, "error", r.err)
			failures = append(failures, r.err)
			// Give up early when even the witnesses still pending cannot
			// complete the quorum.
			if !w.policy.satisfied(func(i int) bool { return got[i] != nil || pending[i] }) {
				break
			}
			continue
		}
		got[r.t.w.index] = r.cs
		if w.policy.satisfied(func(i int) bool { return got[i] != nil }) {
			out := &signedNote{text: n.text}
			for _, s := range n.sigs {
				if len(w.policy.byKey[keyID{s.Name, s.Hash}]) == 0 {
					out.sigs = append(out.sigs, s)
				}
			}
			for _, c := range got {
				if c != nil {
					out.sigs = append(out.sigs, c.Signature)
				}
			}
			return out.bytes(), nil
		}
	}
	pe := &PolicyError{Quorum: w.policy.quorumDesc}
	for i, c := range got {
		if c != nil {
			pe.Cosigned = append(pe.Cosigned, w.policy.witnesses[i].Name)
		}
	}
	order := make(map[string]int, len(w.policy.witnesses))
	for i, pw := range w.policy.witnesses {
		order[pw.Name] = i
	}
	slices.SortFunc(failures, func(a, b *WitnessError) int { return order[a.Witness] - order[b.Witness] })
	pe.Failures = failures
	return nil, pe
}

// proofCache shares consistency proofs between witnesses at the same size.
type proofCache struct {
	// ctx is the context of the Witness call: a proof outlives the request
	// that first asked for it, so it must not depend on that request's
	// timeout.
	ctx     context.Context
	f       ProofFunc
	newSize uint64
	mu      sync.Mutex
	results map[uint64]func() ([][]byte, error)
}

func (c *proofCache) get(oldSize uint64) ([][]byte, error) {
	c.mu.Lock()
	f, ok := c.results[oldSize]
	if !ok {
		f = sync.OnceValues(func() ([][]byte, error) {
			return c.f(c.ctx, oldSize, c.newSize)
		})
		c.results[oldSize] = f
	}
	c.mu.Unlock()
	return f()
}

// update runs the add-checkpoint exchange with one witness.
//
// SPEC(design.md 9)
func (w *Witnesser) update(ctx context.Context, t *target, signed []byte, text string, size uint64, proofs *proofCache) (*Cosignature, *WitnessError) {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	werr := func(status int, err error) *WitnessError {
		return &WitnessError{Witness: t.w.Name, URL: t.url, Status: status, Err: err}
	}
	var last *WitnessError
	for attempt := 0; attempt < w.maxAttempts; attempt++ {
		t.mu.Lock()
		old := t.size
		if !t.known {
			// SPEC(tlog-witness): "If a client doesn't have information on
			// the latest cosigned checkpoint, it MAY initially make a request
			// with a old size of zero to obtain it."
			old = 0
		}
		t.mu.Unlock()
		if old > size {
			return nil, werr(0, fmt.Errorf("%w: the witness has cosigned size %d, larger than this checkpoint's %d", ErrConflict, old, size))
		}

		body, err := requestBody(old, size, signed, proofs)
		if err != nil {
			return nil, werr(0, err)
		}
		status, header, resp, err := w.post(ctx, t.url, body)
		if err != nil {
			return nil, werr(0, err)
		}
		switch status {
		case http.StatusOK:
			cs, err := t.parseCosignature(text, resp)
			if err != nil {
				return nil, werr(status, err)
			}
			t.mu.Lock()
			if !t.known || t.size < size {
				t.size, t.known = size, true
			}
			t.mu.Unlock()
			return cs, nil

		case http.StatusConflict:
			// SPEC(tlog-witness): "If it doesn't match, the witness MUST
			// respond with a "409 Conflict" HTTP status code. The response
			// body MUST consist of the tree size of the latest cosigned
			// checkpoint in decimal, followed by a newline (U+000A). The
			// response MUST have a Content-Type of text/x.tlog.size."
			mt, _, _ := mime.ParseMediaType(header.Get("Content-Type"))
			if mt != "text/x.tlog.size" {
				// SPEC(tlog-witness): "If the old size matches the checkpoint
				// size, the witness MUST check that the root hashes are also
				// identical. If they don't match, the witness MUST respond
				// with a "409 Conflict" HTTP status code."
				return nil, werr(status, fmt.Errorf("%w: a different root hash for size %d", ErrConflict, old))
			}
			ws, err := parseSize(resp)
			if err != nil {
				return nil, werr(status, fmt.Errorf("%w: 409 body: %w", ErrBadResponse, err))
			}
			if ws == old {
				return nil, werr(status, fmt.Errorf("%w: 409 Conflict for old size %d, but reports the same size", ErrBadResponse, old))
			}
			if ws > size {
				t.mu.Lock()
				t.size, t.known = ws, true
				t.mu.Unlock()
				return nil, werr(status, fmt.Errorf("%w: the witness has cosigned size %d, larger than this checkpoint's %d", ErrConflict, ws, size))
			}
			w.logger.InfoContext(ctx, "witness resync", "witness", t.w.Name, "sent_old", old, "witness_size", ws)
			t.mu.Lock()
			t.size, t.known = ws, true
			t.mu.Unlock()
			last = werr(status, fmt.Errorf("%w: size still changing after %d attempts", ErrWitnessStatus, w.maxAttempts))
			continue

		case http.StatusNotFound:
			// SPEC(tlog-witness): "If the checkpoint origin is unknown, the
			// witness MUST respond with a "404 Not Found" HTTP status code."
			return nil, werr(status, ErrUnknownLog)
		case http.StatusForbidden:
			// SPEC(tlog-witness): "If none of the signatures verify against a
			// trusted public key, the witness MUST respond with a "403
			// Forbidden" HTTP status code."
			return nil, werr(status, ErrLogSignature)
		case http.StatusUnprocessableEntity:
			// SPEC(tlog-witness): "If the Merkle Consistency Proof doesn't
			// verify, the witness MUST respond with a "422 Unprocessable
			// Entity" HTTP status code."
			return nil, werr(status, fmt.Errorf("%w from size %d to %d", ErrInvalidProof, old, size))
		default:
			return nil, werr(status, fmt.Errorf("%w: %s", ErrWitnessStatus, snippet(resp)))
		}
	}
	return nil, last
}

// requestBody builds an add-checkpoint request body from old to the
// checkpoint signed, of size size.
func requestBody(old, size uint64, signed []byte, proofs *proofCache) ([]byte, error) {
	var proof [][]byte
	// SPEC(tlog-witness): "The proof MUST be empty if the old size is zero."
	// A proof from a size to itself is empty too.
	if old > 0 && old < size {
		var err error
		proof, err = proofs.get(old)
		if err != nil {
			return nil, fmt.Errorf("consistency proof from %d to %d: %w", old, size, err)
		}
	}
	req := AddCheckpointRequest{OldSize: old, Proof: proof, Checkpoint: signed}
	b, err := req.Marshal()
	if err != nil {
		return nil, fmt.Errorf("consistency proof from %d to %d: %w", old, size, err)
	}
	return b, nil
}

func (w *Witnesser) post(ctx context.Context, u string, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return resp.StatusCode, nil, nil, fmt.Errorf("reading response: %w", err)
	}
	if len(b) > maxResponseBytes {
		return resp.StatusCode, nil, nil, fmt.Errorf("%w: response larger than %d bytes", ErrBadResponse, maxResponseBytes)
	}
	return resp.StatusCode, resp.Header, b, nil
}

// parseCosignature verifies a 200 response and returns the witness's
// cosignature.
//
// SPEC(tlog-witness): "The response body MUST be a sequence of one or more
// note signature lines, each starting with the — character (U+2014) and
// ending with a newline character (U+000A). The signatures MUST be
// cosignatures from the witness key(s) on the checkpoint." and "The client
// MUST ignore any cosignatures from unknown keys. To parse the response, the
// client MAY concatenate it to the checkpoint, and use a note verification
// function configured with the witness keys it trusts."
//
// SPEC(design.md 9)
func (t *target) parseCosignature(text string, resp []byte) (*Cosignature, error) {
	if len(resp) == 0 {
		return nil, fmt.Errorf("%w: empty 200 response", ErrBadResponse)
	}
	n, err := parseNote(append([]byte(text+"\n"), resp...))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadResponse, err)
	}
	v := t.w.verifier
	var best *Cosignature
	for _, s := range n.sigs {
		if s.Name != v.Name() || s.Hash != v.KeyHash() {
			continue // another key of the witness, or another witness
		}
		ts, sig, err := ParseCosignature(s)
		if err != nil || !v.Verify([]byte(text), sig) {
			return nil, fmt.Errorf("%w: the cosignature does not verify against the witness's key", ErrBadResponse)
		}
		if best == nil || ts.After(best.Time) {
			best = &Cosignature{Witness: t.w.Name, Time: ts, Signature: s}
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w: no cosignature by key %s+%08x in the response", ErrBadResponse, v.Name(), v.KeyHash())
	}
	return best, nil
}

// parseSize parses a text/x.tlog.size body: a decimal size and a newline.
func parseSize(b []byte) (uint64, error) {
	s, ok := strings.CutSuffix(string(b), "\n")
	if !ok || !canonicalDecimal([]byte(s)) {
		return 0, fmt.Errorf("malformed size %s", snippet(b))
	}
	return strconv.ParseUint(s, 10, 64)
}

func snippet(b []byte) string {
	const max = 200
	s := strings.ToValidUTF8(string(b), "?")
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strconv.Quote(s)
}
