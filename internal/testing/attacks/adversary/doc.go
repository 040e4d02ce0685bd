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
//   - [Log] wraps the directory's [log.Log] backend and substitutes entries
//     on their way into the log: a change record the map never saw (A6), a
//     replayed or removed-device change forced past the directory's checks
//     (A8).
//   - [ForgeRecovery] and [ForgeChange] build change records with the
//     operator's or a stolen device's key.
//
// Split views and rewritten histories (A4, A5) need no wrapper: the operator
// runs a second honest directory with the same keys on a separate log.
package adversary
