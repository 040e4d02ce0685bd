// Package adversary holds the malicious directory operator's tools used by
// the attack suite (internal/testing/attacks): wrappers around the honest parts,
// never edits to them, and never linked into a production binary (the
// package is internal and only the attack tests and the ktattack report
// command import it).
//
// The adversary of the brief is the operator itself: it holds the log
// signing key, the VRF key and the recovery key, runs the servers and can
// rewrite anything they send. Accordingly:
//
//   - [Proxy] sits in front of the honest directory's Directory service and
//     rewrites its answers: a ghost device injected into a lookup (A1), a
//     stale device set served after a revocation (A3), a frozen view served
//     forever (A9).
//
//   - [Log] wraps the directory's [log.Log] backend and substitutes entries
//     on their way into the log: a change record the map never saw (A6), a
//     replayed or removed-device change forced past the directory's checks
//     (A8).
//
//   - [ForgeRecovery] and [ForgeChange] build change records with the
//     operator's or a stolen device's key.
//
//   - [Directory] is a small dishonest directory for what the honest one
//     cannot be made to do, since it checks every rule (A11): it serves the
//     Directory and Log services to real clients over the honest library
//     parts (a real log, smt, vrf, api), logs a change that breaks R1-R6
//     ([Directory.AppendForged]), closes epochs whose map the log does not
//     justify ([Directory.CloseEpoch] with [Point] overrides, a record
//     [Directory.Keep]s but never logs), collects audit statements
//     (POST /kt/v1/audit, design.md 14.2) and serves only audited epochs,
//     or any epoch when forced ([Directory.Serve]).
//
// Split views and rewritten histories (A4, A5) need no wrapper: the operator
// runs a second honest directory with the same keys on a separate log.
package adversary
