// Package attacks plays the attack catalogue of the design brief (A1 to
// A13, A14) against real clients (package client over gRPC on loopback) and
// real auditors (package auditor, following the log over its HTTP read
// API and gossiping), with the adversary's tools of package adversary
// wrapped around an honest directory. Each scenario first runs the same
// flow without the attack (the control, which must succeed), then mounts
// the attack and reports who detected it, how fast, and with what
// evidence. docs/attacks.md describes the scenarios; the tests in
// attacks_test.go assert them and cmd/ktattack prints the report.
package attacks

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

var errNotDetected = errors.New("attack not detected")

// Detectors named in reports.
const (
	BySender       = "sender client"
	ByOwnerMonitor = "owner monitor"
	ByStrictSender = "strict-mode sender"
	ByAuditor      = "auditor"
	ByDirectory    = "directory"
	ByLogAPI       = "log read API"
)

// Detection is one party catching the attack.
type Detection struct {
	// By names the detector (one of the By constants).
	By string `json:"detected_by"`
	// After is the time from mounting the attack to the detection; Polls
	// counts the detector's operations in that time (lookups, monitoring
	// polls, audit steps, requests), the detecting one included. Clock
	// says whose clock After is on: "wall" or "client clock" (the
	// sender's controllable clock, advanced without waiting).
	After time.Duration `json:"-"`
	Polls int           `json:"polls"`
	Clock string        `json:"clock"`
	// Evidence says what the detector holds: the typed error, the alert,
	// the violation, the verified bundle.
	Evidence string `json:"evidence"`
	// Err is the typed error the detector returned (nil for alerts and
	// violations); Bundle a kt-evidence/v1 bundle, verified offline with
	// log/evidence before it is reported.
	Err    error  `json:"-"`
	Bundle []byte `json:"bundle,omitempty"`
	// ErrText is Err's full text.
	ErrText string `json:"error,omitempty"`
	// Detail carries scenario-specific values for the tests (alerts,
	// violations); not reported.
	Detail any `json:"-"`
}

// Result is the outcome of one scenario.
type Result struct {
	ID     string `json:"id"`
	Attack string `json:"attack"`
	// Capability is the adversary's capability the scenario uses.
	Capability string `json:"capability"`
	// Control is the flow that succeeded without the attack.
	Control    string      `json:"control"`
	Detections []Detection `json:"detections"`
	// Notes are observations worth reporting that are not detections
	// (what the attack did achieve, windows of exposure).
	Notes []string `json:"notes,omitempty"`
	// Took is the scenario's wall time, setup included.
	Took time.Duration `json:"-"`
}

// Find returns the first detection by who, or nil.
func (r *Result) Find(by string) *Detection {
	for i := range r.Detections {
		if r.Detections[i].By == by {
			return &r.Detections[i]
		}
	}
	return nil
}

func (r *Result) detect(d Detection) {
	if d.Clock == "" {
		d.Clock = "wall"
	}
	d.Evidence = strings.Join(strings.Fields(d.Evidence), " ")
	if d.Err != nil {
		d.ErrText = d.Err.Error()
	}
	r.Detections = append(r.Detections, d)
}

func (r *Result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Scenario is one attack of the catalogue.
type Scenario struct {
	ID, Attack, Capability string
	run                    func(ctx context.Context, w *World, r *Result) error
}

// Scenarios lists A1 to A14 in order (A11 and A13 in three variants each).
func Scenarios() []Scenario {
	return []Scenario{
		{"A1", "ghost device in a lookup response, not in the log", "rewrites lookup answers (gRPC proxy) and signs with the recovery key", runA1},
		{"A2", "ghost device written to the log through the recovery path", "the operator's recovery key, through the Operator service", runA2},
		{"A3", "stale device set served after a revocation", "replays recorded honest answers (gRPC proxy)", runA3},
		{"A4", "split view: a fork shown only to the sender", "the log key and a second directory on a separate log, without witnesses", runA4},
		{"A5", "history rewritten: a checkpoint inconsistent with an earlier one", "the log key, a second directory on a new log, a stolen witness key", runA5},
		{"A6", "published map root not derived from the logged changes", "substitutes a log entry under the directory (log wrapper)", runA6},
		{"A7", "ghost device added and removed between two owner polls", "the operator's recovery key, twice between polls", runA7},
		{"A8", "replayed change, and a change signed by a removed device", "the network (replays), a stolen removed device, the log wrapper", runA8},
		{"A9", "old valid checkpoint served forever (freeze)", "replays a frozen view (gRPC proxy)", runA9},
		{"A10", "hostile input at every interface", "any network peer", runA10},
		{"A11", "forged change logged for Bob (R5) and mapped in one epoch", "the operator's own directory: logs a change that breaks the rules and edits the map", runA11},
		{"A11M", "map root pointing Bob at a record the log does not hold", "the operator's own directory: edits the map", runA11MapNotFromLog},
		{"A11C", "forged change shown in epoch N, Bob's record restored in N+1, no auditors", "the operator's own directory, clients without an audit policy", runA11ContactMonitoring},
		{"A12", "harvesting device sets, keys and account links by VRF index", "any network peer, reading every index from the log", runA12},
		{"A13", "forged sender on a message", "a registered user's own keys, and whoever relays messages (re-labels, re-signs)", runA13},
		{"A13R", "a removed device sends as its former owner", "a stolen device's keys, after the owner removed it", runA13Removed},
		{"A13P", "a message replayed, or held back past the window", "whoever relays messages (re-delivers, delays)", runA13Replay},
		{"A14", "auditors cut off: the served epoch ages", "cuts the directory off from its auditors (withheld epochs, stalled auditors)", runA14},
	}
}

// Run plays s in a fresh world and returns its result. An error means the
// scenario failed: its control did not succeed, or the attack went
// undetected by the party that must catch it.
func Run(ctx context.Context, s Scenario) (*Result, error) {
	w, err := NewWorld()
	if err != nil {
		return nil, err
	}
	defer w.Close()
	r := &Result{ID: s.ID, Attack: s.Attack, Capability: s.Capability}
	start := time.Now()
	err = s.run(ctx, w, r)
	r.Took = time.Since(start)
	if err != nil {
		return r, fmt.Errorf("%s: %w", s.ID, err)
	}
	if len(r.Detections) == 0 {
		return r, fmt.Errorf("%s: %w", s.ID, errNotDetected)
	}
	return r, nil
}

// expect checks that err is a detection of the sentinel want.
func expect(what string, err, want error) error {
	if err == nil {
		return fmt.Errorf("%s: %w (the operation succeeded)", what, errNotDetected)
	}
	if !errors.Is(err, want) {
		return fmt.Errorf("%s: got %v, want %v", what, err, want)
	}
	return nil
}
