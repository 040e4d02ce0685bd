// Package witness implements the log's side and the client's side of
// witnessing: the witness policy, the verification of cosigned checkpoints
// against it, and a client for the C2SP tlog-witness protocol that collects
// cosignatures for new checkpoints.
//
// # Policy
//
// A [Policy] is parsed from the Sigsum policy format
// (https://git.glasklar.is/sigsum/core/sigsum-go/-/blob/main/doc/policy.md),
// with the difference Tessera also makes: keys are C2SP signed-note verifier
// keys (vkeys), and witness keys are C2SP tlog-cosignature keys (signature
// type 0x04 for Ed25519, 0x06 for ML-DSA-44):
//
//	# Comments run to the end of the line.
//	log localhost/kt+a1b2c3d4+AbCd...
//	witness w1 witness1.example+11223344+BAbC... https://witness1.example
//	witness w2 witness2.example+55667788+BEfG... https://witness2.example
//	witness w3 witness3.example+99aabbcc+BHiJ...
//	group majority 2 w1 w2 w3
//	quorum majority
//
// The same text configures the log's publishing policy (Tessera's
// WithWitnesses parses it with NewWitnessGroupFromPolicy for the posix
// backend, and [Witnesser] uses it for the Trillian backend) and the
// clients' acceptance policy ([Policy.Check]). Both backends, and ktd at
// start-up, check it with [ParsePolicy] first, which is stricter than
// Tessera's parser: it rejects
// thresholds of zero, groups without members, a name listed twice in one
// group, two witnesses with the same public key, and policies without
// exactly one quorum line; every error names the offending line.
//
// # Checking cosignatures
//
// [Policy.Check] verifies the cosignatures on a signed checkpoint and
// reports whether they satisfy the quorum; a failure is a [*PolicyError]
// carrying which witnesses cosigned validly and what the quorum needs. The
// returned [Cosignature] values carry the witnesses' timestamps, and
// [Policy.QuorumTime] turns them into the time as of which a quorum vouched
// for the checkpoint, which clients use to bound a checkpoint's age.
// Check does not verify the log's own signature: use
// [github.com/keytrans/kt/log.ParseCheckpoint] for that.
//
// # Collecting cosignatures
//
// A [Witnesser] sends a new checkpoint to every witness of the quorum in
// parallel with the tlog-witness add-checkpoint call, keeping each witness's
// last known size so that it can send the right consistency proof, and
// resynchronising when a witness answers 409 Conflict. It verifies every
// cosignature it receives and returns the checkpoint with the cosignatures
// merged in as soon as the policy is satisfied.
//
// # The add-checkpoint body
//
// [AddCheckpointRequest] is the request body of add-checkpoint, with its one
// parser ([ParseAddCheckpoint]) and encoder ([AddCheckpointRequest.Marshal]),
// used by the Witnesser, by the auditor's witness endpoint and by the test
// witness.
package witness
