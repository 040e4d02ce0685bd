package directory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log/witness"
)

// The audit mode (docs/design.md 14.3): with Config.AuditPolicy the
// directory serves the latest epoch that a quorum of auditors vouched for,
// not the latest published one.
//
// Publication is unchanged: the sequencer (or a replicated reader) makes
// each new epoch the *published* one (d.pub), as without an audit policy.
// The audit collector then asks every auditor of the policy for an audit
// statement on the epoch's checkpoint note (POST URL/kt/v1/audit), one
// worker goroutine per auditor, and as soon as the statements it holds for
// one epoch satisfy the policy, that epoch becomes the *served* one
// (d.cur), its checkpoint note carrying the statement lines after the
// log's signature and the witness cosignatures. Lookups, batch lookups,
// monitoring and GetEpoch answer from the served epoch only.
//
// The published epochs newer than the served one wait in a queue with
// their map snapshots (at most MaxUnservedEpochs, the newest). Each worker
// asks its auditor about the newest queued epoch that another auditor
// already vouched for (its statement completes a quorum soonest; an
// auditor that audited a size vouches for every smaller one at once), and
// otherwise about the newest queued epoch. A 503 answer is retried after
// its Retry-After (at most a second) for as long as that choice stands: a
// newer epoch supersedes an epoch nobody vouched for. Other refusals (4xx)
// and bad statements rule the auditor out for that epoch; network errors
// and other statuses back off (up to maxAuditBackoff) and try again.

// Defaults and limits of the audit mode.
const (
	// DefaultAuditTimeout is the timeout of the default
	// Config.AuditHTTPClient.
	DefaultAuditTimeout = 10 * time.Second
	// MaxUnservedEpochs bounds the published epochs, newer than the served
	// one, whose map snapshots the audit collector keeps (the newest).
	MaxUnservedEpochs = 64
	// AuditPath is the auditors' endpoint, appended to their URL.
	AuditPath = "/kt/v1/audit"

	maxAuditResponse = 4 << 10
	maxRetryAfter    = time.Second
	minRetryAfter    = 50 * time.Millisecond
	maxAuditBackoff  = 10 * time.Second
	// auditSkew is the clock skew tolerated on a statement's timestamp,
	// that of the client (client.DefaultSkew).
	auditSkew = 10 * time.Second
)

// Results of an audit request, as AuditMetrics counts them.
const (
	AuditOK          = "ok"          // a valid statement
	AuditInvalid     = "invalid"     // a 200 answer without a valid statement
	AuditUnavailable = "unavailable" // 503: the auditor has not audited that far yet
	AuditRefused     = "refused"     // another 4xx: the auditor will not vouch for the epoch
	AuditError       = "error"       // no answer, or another status
)

// AuditMetrics is implemented by a Config.Metrics that also counts the
// audit collector's requests.
type AuditMetrics interface {
	// AuditStatement counts one answer of the auditor named auditor (its
	// name in the audit policy) with one of the Audit* results.
	AuditStatement(auditor, result string)
	// EpochServed reports that an epoch became the served one, wait after
	// it was published: the time its audit statements took (an epoch
	// superseded before it was served is not reported).
	EpochServed(epoch uint64, wait time.Duration)
}

// ErrAuditPolicy is wrapped by the errors of [CheckAuditPolicy].
var ErrAuditPolicy = errors.New("directory: unusable audit policy")

// CheckAuditPolicy parses an audit policy (witness.ParseAuditPolicy) and
// checks that a directory can serve under it: every auditor has a URL to
// ask, the quorum is not "none", and no auditor's key is a key of the
// witness policy witnesses (empty: none). Errors wrap ErrAuditPolicy.
//
// SPEC(design.md 14.3)
func CheckAuditPolicy(audit, witnesses []byte) (*witness.Policy, error) {
	p, err := witness.ParseAuditPolicy(audit)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAuditPolicy, err)
	}
	for _, a := range p.Witnesses() {
		if a.URL == "" {
			return nil, fmt.Errorf("%w: auditor %s has no URL: the directory must ask it for audit statements", ErrAuditPolicy, a.Name)
		}
	}
	if p.QuorumNone() {
		return nil, fmt.Errorf("%w: quorum none: no epoch would need an audit statement (leave the audit policy out instead)", ErrAuditPolicy)
	}
	if len(witnesses) > 0 {
		wp, err := witness.ParsePolicy(witnesses)
		if err != nil {
			return nil, fmt.Errorf("%w: the witness policy: %w", ErrAuditPolicy, err)
		}
		// SPEC(design.md 14.1): an audit key must never be a witness key.
		if err := witness.CheckDisjoint(wp, p); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrAuditPolicy, err)
		}
	}
	return p, nil
}

// auditState is the audit collector.
type auditState struct {
	policy   *witness.Policy
	auditors []*witness.Witness
	client   *http.Client
	metrics  AuditMetrics // nil: not counted
	started  time.Time

	mu      sync.Mutex
	pending []*auditEpoch // published, newer than the served epoch; oldest first
	changed chan struct{} // closed and replaced when pending changes
	wg      sync.WaitGroup
}

// auditEpoch is a published epoch waiting for its audit statements.
type auditEpoch struct {
	ep      *epoch
	at      time.Time         // when it was published
	stmts   map[string][]byte // valid statement notes (checkpoint + one line), by auditor
	refused map[string]bool   // auditors not to ask again about it
	gone    bool              // served, superseded by a served epoch, or dropped
}

func newAudit(cfg *Config) (*auditState, error) {
	if len(cfg.AuditPolicy) == 0 {
		return nil, nil
	}
	p, err := CheckAuditPolicy(cfg.AuditPolicy, []byte(cfg.WitnessPolicy))
	if err != nil {
		return nil, err
	}
	a := &auditState{policy: p, auditors: p.Witnesses(), client: cfg.AuditHTTPClient, started: time.Now(), changed: make(chan struct{})}
	if a.client == nil {
		a.client = &http.Client{Timeout: DefaultAuditTimeout}
	}
	a.metrics, _ = cfg.Metrics.(AuditMetrics)
	return a, nil
}

// signal wakes the workers; a.mu must be held.
func (a *auditState) signal() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// publish makes ep the published epoch: served at once without an audit
// policy, queued for the auditors with one.
//
// SPEC(design.md 14.3)
func (d *Directory) publish(ep *epoch) {
	d.pub.Store(ep)
	a := d.audit
	if a == nil {
		d.cur.Store(ep)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if cur := d.cur.Load(); cur != nil && cur.size >= ep.size {
		return
	}
	if n := len(a.pending); n > 0 && a.pending[n-1].ep.size >= ep.size {
		return
	}
	a.pending = append(a.pending, &auditEpoch{ep: ep, at: time.Now(), stmts: make(map[string][]byte), refused: make(map[string]bool)})
	// SPEC(design.md 14.3): at most the newest MaxUnservedEpochs unserved
	// epochs keep their map snapshot.
	for len(a.pending) > MaxUnservedEpochs {
		a.pending[0].gone = true
		a.pending[0] = nil
		a.pending = a.pending[1:]
	}
	a.signal()
}

// startAudit starts one worker per auditor (New, once the published epoch
// is recovered).
func (d *Directory) startAudit() {
	a := d.audit
	if a == nil {
		return
	}
	for _, w := range a.auditors {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			d.auditWorker(w)
		}()
	}
}

// stopAudit waits for the workers after d.ctx is cancelled.
func (d *Directory) stopAudit() {
	if d.audit != nil {
		d.audit.wg.Wait()
	}
}

// auditWorker asks one auditor for statements until the directory closes.
//
// SPEC(design.md 14.3)
func (d *Directory) auditWorker(w *witness.Witness) {
	a := d.audit
	var backoff time.Duration
	for {
		ae := a.pick(d.ctx, w.Name)
		if ae == nil {
			return
		}
		ans := d.askAuditor(d.ctx, w, ae.ep.full.Checkpoint)
		if d.ctx.Err() != nil {
			return
		}
		result, wait := AuditError, time.Duration(0)
		switch {
		case ans.err != nil || ans.status >= 500 && ans.status != http.StatusServiceUnavailable || ans.status == http.StatusTooManyRequests:
			backoff = min(max(2*backoff, time.Second), maxAuditBackoff)
			wait = backoff
			d.logger.Warn("directory: asking an auditor for an audit statement; retrying", "auditor", w.Name, "epoch", ae.ep.record.Epoch, "status", ans.status, "err", ans.err, "retry_in", wait)
		case ans.status == http.StatusServiceUnavailable:
			// SPEC(design.md 14.3): 503 is retried, honouring
			// Retry-After (at most a second).
			result, wait, backoff = AuditUnavailable, ans.retryAfter, 0
			d.logger.Debug("directory: the auditor has not audited the epoch yet", "auditor", w.Name, "epoch", ae.ep.record.Epoch, "answer", snippet(ans.body))
		case ans.status == http.StatusOK:
			backoff = 0
			note, err := d.checkStatement(ae.ep, w.Name, ans.body)
			if err != nil {
				// SPEC(design.md 14.3): bad lines are logged and ignored.
				result = AuditInvalid
				d.logger.Warn("directory: ignoring an invalid audit statement", "auditor", w.Name, "epoch", ae.ep.record.Epoch, "err", err)
				a.refuse(ae, w.Name)
				break
			}
			result = AuditOK
			d.addStatement(ae, w.Name, note)
		default:
			result, backoff = AuditRefused, 0
			d.logger.Warn("directory: the auditor refuses to vouch for the epoch", "auditor", w.Name, "epoch", ae.ep.record.Epoch, "log_size", ae.ep.size, "status", ans.status, "answer", snippet(ans.body))
			a.refuse(ae, w.Name)
		}
		if a.metrics != nil {
			a.metrics.AuditStatement(w.Name, result)
		}
		if wait > 0 {
			select {
			case <-d.ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}
}

// pick returns the epoch to ask the auditor name about next, waiting for
// one; nil once ctx is done. It is the newest queued epoch that another
// auditor vouched for, or else the newest one, among those the auditor has
// neither vouched for nor refused.
//
// SPEC(design.md 14.3)
func (a *auditState) pick(ctx context.Context, name string) *auditEpoch {
	for {
		a.mu.Lock()
		var newest, vouched *auditEpoch
		for _, ae := range a.pending {
			if _, ok := ae.stmts[name]; ok || ae.refused[name] {
				continue
			}
			newest = ae
			if len(ae.stmts) > 0 {
				vouched = ae
			}
		}
		ch := a.changed
		a.mu.Unlock()
		switch {
		case vouched != nil:
			return vouched
		case newest != nil:
			return newest
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
	}
}

// refuse rules the auditor out for ae.
func (a *auditState) refuse(ae *auditEpoch, name string) {
	a.mu.Lock()
	ae.refused[name] = true
	a.mu.Unlock()
}

// auditAnswer is an auditor's answer to one request.
type auditAnswer struct {
	status     int // 0 when err is set
	body       []byte
	retryAfter time.Duration // for 503
	err        error
}

// askAuditor posts the checkpoint note to the auditor's audit endpoint.
//
// SPEC(design.md 14.2)
func (d *Directory) askAuditor(ctx context.Context, w *witness.Witness, checkpoint []byte) auditAnswer {
	u := strings.TrimSuffix(w.URL, "/") + AuditPath
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(checkpoint))
	if err != nil {
		return auditAnswer{err: err}
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := d.audit.client.Do(req)
	if err != nil {
		return auditAnswer{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAuditResponse+1))
	if err != nil {
		return auditAnswer{status: resp.StatusCode, err: fmt.Errorf("reading the answer: %w", err)}
	}
	ans := auditAnswer{status: resp.StatusCode, body: body}
	if len(body) > maxAuditResponse {
		ans.body = body[:maxAuditResponse]
		if resp.StatusCode == http.StatusOK {
			ans.err = fmt.Errorf("an answer of more than %d bytes", maxAuditResponse)
		}
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		ans.retryAfter = retryAfter(resp.Header.Get("Retry-After"))
	}
	return ans
}

// retryAfter is the wait after a 503 answer: its Retry-After in seconds,
// within [minRetryAfter, maxRetryAfter]; maxRetryAfter without one.
func retryAfter(h string) time.Duration {
	s, err := strconv.ParseUint(strings.TrimSpace(h), 10, 32)
	if err != nil {
		return maxRetryAfter
	}
	return min(max(time.Duration(s)*time.Second, minRetryAfter), maxRetryAfter)
}

// Errors of a statement (checkStatement), for the log.
var (
	errStatementSyntax  = errors.New("not exactly one note signature line")
	errStatementInvalid = errors.New("not a valid audit statement of the auditor on this checkpoint")
	errStatementTime    = errors.New("statement timestamp out of range")
)

// checkStatement verifies a 200 answer of the auditor name to the
// checkpoint of ep: exactly one signature line, a valid audit statement
// (tlog-cosignature/v1) by that auditor's key in the audit policy, dated
// no earlier than the epoch's timestamp and not in the future (both with
// the clients' skew). It returns the checkpoint note with the line
// appended.
//
// SPEC(design.md 14.1)
// SPEC(design.md 14.3)
// SPEC(design.md 12.2 step 2.2a): statements a client would not count are
// not counted here either.
func (d *Directory) checkStatement(ep *epoch, name string, body []byte) ([]byte, error) {
	line, ok := bytes.CutSuffix(body, []byte("\n"))
	if !ok || !bytes.HasPrefix(line, []byte("— ")) || bytes.ContainsAny(line, "\n\r") {
		return nil, fmt.Errorf("%w: %s", errStatementSyntax, snippet(body))
	}
	signed := append(bytes.Clone(ep.full.Checkpoint), body...)
	cs, err := d.audit.policy.Check(signed)
	var pe *witness.PolicyError
	if err != nil && !errors.As(err, &pe) {
		return nil, fmt.Errorf("%w: %w", errStatementInvalid, err)
	}
	if pe != nil && len(pe.Invalid) > 0 {
		return nil, fmt.Errorf("%w: %w", errStatementInvalid, err)
	}
	var c *witness.Cosignature
	for i := range cs {
		if cs[i].Witness == name {
			c = &cs[i]
		}
	}
	if c == nil {
		return nil, fmt.Errorf("%w: %s", errStatementInvalid, snippet(body))
	}
	if err := witness.CheckStatementTime(c.Time, time.UnixMilli(int64(ep.record.Timestamp)), time.Now(), auditSkew); err != nil {
		return nil, fmt.Errorf("%w: %w", errStatementTime, err)
	}
	return signed, nil
}

// addStatement records a valid statement on ae and serves ae once its
// statements satisfy the audit policy.
//
// SPEC(design.md 14.3)
func (d *Directory) addStatement(ae *auditEpoch, name string, signed []byte) {
	a := d.audit
	a.mu.Lock()
	defer a.mu.Unlock()
	if ae.gone {
		return
	}
	ae.stmts[name] = signed
	var others [][]byte
	for _, w := range a.auditors {
		if s, ok := ae.stmts[w.Name]; ok {
			others = append(others, s)
		}
	}
	merged, err := a.policy.Merge(ae.ep.full.Checkpoint, others...)
	if err != nil {
		d.logger.Error("directory: merging audit statements", "epoch", ae.ep.record.Epoch, "err", err)
		return
	}
	if _, err := a.policy.Check(merged); err != nil {
		a.signal() // others now prefer this epoch
		return
	}
	// SPEC(design.md 14.3): the served epoch only moves forward.
	if cur := d.cur.Load(); cur != nil && cur.size >= ae.ep.size {
		return
	}
	d.cur.Store(ae.ep.withCheckpoint(merged))
	if m, ok := d.cfg.Metrics.(AuditMetrics); ok {
		m.EpochServed(ae.ep.record.Epoch, time.Since(ae.at))
	}
	keep := a.pending[:0]
	for _, p := range a.pending {
		if p.ep.size <= ae.ep.size {
			p.gone = true
			continue
		}
		keep = append(keep, p)
	}
	clear(a.pending[len(keep):])
	a.pending = keep
	a.signal()
	d.logger.Debug("directory: serving an audited epoch", "epoch", ae.ep.record.Epoch, "log_size", ae.ep.size, "statements", len(ae.stmts))
}

// withCheckpoint returns a copy of ep whose epoch checkpoint note is
// checkpoint (the same checkpoint with more signature lines).
func (ep *epoch) withCheckpoint(checkpoint []byte) *epoch {
	return &epoch{
		record:   ep.record,
		logIndex: ep.logIndex,
		size:     ep.size,
		snap:     ep.snap,
		full: &ktpb.EpochPart{
			Checkpoint:       checkpoint,
			EpochRecord:      ep.full.EpochRecord,
			InclusionProof:   ep.full.InclusionProof,
			ConsistencyProof: [][]byte{},
		},
		cons: make(map[uint64][][]byte),
	}
}

// notAudited is the error of a lookup before the first audited epoch.
//
// SPEC(design.md 14.3)
func (d *Directory) notAudited() error {
	a := d.audit
	a.mu.Lock()
	defer a.mu.Unlock()
	// The auditors missing from the queued epoch closest to a quorum.
	var best *auditEpoch
	for _, ae := range a.pending {
		if best == nil || len(ae.stmts) >= len(best.stmts) {
			best = ae
		}
	}
	var missing []string
	for _, w := range a.auditors {
		if best == nil || best.stmts[w.Name] == nil {
			missing = append(missing, w.Name)
		}
	}
	return errorf(ErrUnavailable, "no epoch audited by the audit policy yet (waiting for %s)", strings.Join(missing, ", "))
}

// AuditLag is how far the served epoch is behind the published one: the
// difference of their epoch timestamps; before the first audited epoch,
// the time since New. Zero without an audit policy.
func (d *Directory) AuditLag() time.Duration {
	if d.audit == nil {
		return 0
	}
	pub, cur := d.pub.Load(), d.cur.Load()
	switch {
	case pub == nil:
		return 0
	case cur == nil:
		return time.Since(d.audit.started)
	}
	return time.Duration(pub.record.Timestamp-min(cur.record.Timestamp, pub.record.Timestamp)) * time.Millisecond
}

// unservedEpochs is the number of published epochs waiting for audit
// statements (tests).
func (d *Directory) unservedEpochs() int {
	if d.audit == nil {
		return 0
	}
	d.audit.mu.Lock()
	defer d.audit.mu.Unlock()
	return len(d.audit.pending)
}

// snippet quotes the start of an answer for the log.
func snippet(b []byte) string {
	const n = 200
	s := strings.ToValidUTF8(string(b), "?")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return strconv.Quote(s)
}
