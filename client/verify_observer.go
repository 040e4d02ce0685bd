package client

import (
	"time"

	"github.com/keytrans/kt/api/ktpb"
)

// Observation is a monitoring answer verified by an observer: anyone who
// holds the directory's pinned parameters but none of the owner's keys or
// monitor state, such as an operator or an auditor inspecting one index.
type Observation struct {
	// Index is the observed VRF index.
	Index [32]byte
	// Epoch is the verified epoch the answer was given under. Its
	// freshness is not checked (see [VerifyObserved]).
	Epoch *Epoch
	// Changes are every version of the index, 1 to the latest, in order,
	// each with its device set and its comparison with the previous set.
	// An observer cannot tell whose keys are whose: By is zero, and Alerts
	// hold only AlertRuleViolation alerts (rules R1 to R7, as the owner's
	// monitor reports them).
	Changes []Change
}

// VerifyObserved verifies a monitoring answer for index from known version
// 0 (design.md 13), for an observer: the same checks as [VerifyMonitor],
// by the same code, without the owner's monitor state and own keys (so no
// classification of who made each change, no learnt keys and no transient
// device alerts), and with these differences in what the observer pins:
//
//   - there is no trusted epoch: the epoch part is required and verified as
//     in [VerifyEpoch] steps 1 and 2.1 to 2.4 (now bounds the cosignature
//     timestamps), but its freshness (step 2.5) is not checked, since an
//     observer looks at the log as of the epoch the answer names;
//   - p.VRFKey is not used, and p.RecoveryKey may be zero, in which case
//     rule R6 is not checked (a recovery change is taken as signed by the
//     recovery key).
//
// Errors are [*VerifyError] values, with the sentinels of [VerifyMonitor]
// and [VerifyEpoch]. Authorization rule failures of logged records are
// AlertRuleViolation alerts in the changes, not errors.
//
// SPEC(design.md 13): an observer "verifies an answer from k = 0 with
// the same steps 1–4".
func VerifyObserved(p *Params, index [32]byte, resp *ktpb.MonitorResponse, now time.Time) (*Observation, error) {
	if err := p.validate(true); err != nil {
		return nil, err
	}
	e, changes, err := verifyChain(p, index, nil, 0, [32]byte{}, resp, false, func(part *ktpb.EpochPart) (*Epoch, error) {
		if part == nil {
			return nil, fail(StepParse, ErrMalformed, nil, "no epoch part")
		}
		return verifyEpochPart(p, nil, part, now)
	})
	if err != nil {
		return nil, err
	}
	o := &Observation{Index: index, Epoch: e}
	s := &MonitorState{Index: index}
	for i := range changes {
		pc := &changes[i]
		c, _, err := s.check(p, pc)
		if err != nil {
			return nil, err
		}
		s.advance(pc, c.DeviceSet)
		o.Changes = append(o.Changes, *c)
	}
	return o, nil
}
