// Package ktctl is the library behind the operator CLI cmd/ktctl: it
// fetches what a key transparency directory publishes, verifies it against
// pinned keys, and returns the results as plain structs that the CLI prints
// as tables or JSON.
//
// # What is verified
//
// Every command starts from a checkpoint verified with the log's pinned key
// ([Keys]); with a witness policy, each cosignature is checked and named
// ([FetchCheckpoint]). Entries, proofs, histories and device-set diffs are
// then checked against that checkpoint: inclusion and consistency proofs
// with RFC 6962 ([VerifyInclusion], [VerifyConsistency]), a whole-log scan
// by recomputing the checkpoint's root from every entry ([History]), a
// monitoring answer by its epoch proof, map proof, version chain and
// commitment openings ([Diff]).
//
// # Errors
//
// A check that fails is a [*VerifyError]: evidence that the log or the
// directory misbehaved (or that the pinned keys are wrong). Anything else
// (network, files, arguments) is a plain error. The CLI maps the first to
// exit status 1.
//
// The package reads no configuration; the caller passes keys, readers and
// gRPC clients.
package ktctl
