// Package client is the verifying client of the key transparency directory:
// it checks the directory's answers before a sender encrypts to any key, and
// it lets an owner's devices monitor their own handles.
//
// The package has two layers. The verification core ([VerifyEpoch],
// [VerifyLookup], [VerifyLookupInEpoch], [VerifyMonitor]) is pure functions
// over the directory's wire types ([github.com/keytrans/kt/api/ktpb]) that
// perform no I/O and keep no state of their own. The network [Client] is
// built on it: it calls the directory's gRPC Directory service, verifies
// every answer with the core, and writes the new trusted state to its
// [Store] before returning anything. The normative protocol is
// docs/design.md; section numbers below refer to it.
//
// # The network client
//
// [New] takes a ktpb.DirectoryClient (the caller owns the gRPC
// connection), the pinned [Params], a [Store] ([FileStore] in an app,
// [MemStore] in tests) and a [Config] (clock, freshness, strict mode,
// auditors, logger). Then:
//
//   - [Client.Lookup] fetches with the trusted size, verifies, stores and
//     returns the verified device set, or a [*VerifyError];
//   - [Client.Encrypt] looks up the recipient and the sender's own primary
//     handle and returns one HPKE [Envelope] per device (design.md 12.3),
//     or nothing at all: no fallback, no skipped device;
//   - [Client.Decrypt] opens an envelope on the receiving device;
//   - [Client.Init], [Client.Enroll], [Client.AddDevice] (with a
//     [ParseDescriptor]-checked descriptor from the new device, which then
//     calls [Client.Join]), [Client.RemoveDevice], [Client.Rekey] and
//     [Client.SetAccountKey] sign changes exactly as design.md 6 says, after
//     verifying the handle's latest state by lookup; [NewChange] is the
//     same signing step for callers that build sets themselves;
//   - [Client.AccountChange] and [Client.RotateAccountKey] sign changes
//     with the account key (kind 3); [Client.ExportAccountKey] and
//     [Client.ImportAccountKey] carry it between the owner's devices in a
//     passphrase-encrypted export (Argon2id, AES-256-GCM; design.md 13.2);
//     [Client.RecoverWithAccountKey] adds a new device holding the imported
//     key to the account with account-key-signed changes;
//   - [Client.Monitor] polls the device's own handles and reports every
//     change with who authorized it, and alerts;
//   - contact monitoring (design.md 13.3): [Client.Encrypt] remembers each
//     recipient ([Contact]: version, leaf hash, and the epoch record, map
//     proof and record to build evidence from) in the write that stores
//     the trusted checkpoint; every later lookup of a remembered contact,
//     and [Client.CheckContacts], checks the directory's current answer
//     against it, with a records-only chain of the changes in between. A
//     map that went back or a second record for a verified version is a
//     [*ContactChangedError] carrying a kt-evidence/v2 bundle
//     (map-regression or version-conflict); a chain that does not verify
//     is [ErrContactChain]. Either way nothing is encrypted to the contact;
//   - [Client.Gossip] posts the trusted checkpoint to auditors and returns
//     a [*SplitViewError] carrying evidence on a conflict: a kt-evidence/v1
//     bundle of [github.com/keytrans/kt/log/evidence], checked with
//     [VerifyEvidence];
//   - [Client.Watch] runs Monitor and Gossip every monitoring interval;
//   - [Client.ReportEvidence] verifies an evidence bundle an app learnt of
//     and, if it proves the log misbehaved, refuses the log (below).
//
// In strict mode ([Config.Strict]) a contact's account key is pinned on
// first use and a set not signed by it fails with [ErrStrict]; a validly
// signed change of the key is an [*AccountKeyChangedError] until
// [Client.Repin].
//
// Verification codes (design.md 13.5): [Client.VerificationCode] derives
// the code two people compare out of band from both handles' logged
// identities; [Client.ConfirmVerification] checks the code the user typed
// and pins the contact's identity, which makes every later lookup of that
// contact strict for it (whatever [Config.Strict]): a change fails with a
// [*VerifiedContactChangedError] ([ErrVerifiedContactChanged]) naming the
// contact until [Client.Unverify] and a new code.
//
// # Parameters and state
//
// [Params] are what a client pins (section 11): origin, log key, VRF key,
// recovery key, witness policy, freshness bounds and, in audit mode, the
// audit policy and the audit lag bound (section 14.1). [Trusted] is the
// client's trusted epoch checkpoint and latest verified epoch (section 16);
// [MonitorState] is what an owner's device knows about one of its handles.
// Verification never modifies the state it is given; it returns the new
// state, which the caller writes to durable storage before acting on the
// answer. Both states have a small versioned binary encoding.
//
// # Guarantees of a lookup
//
// When [VerifyLookup] returns a result, and the cryptography holds and a
// quorum of the policy's witnesses is honest:
//
//   - the epoch checkpoint is signed by the pinned log key, cosigned by a
//     quorum of the witness policy, and is an append-only extension of every
//     checkpoint this client trusted before (P3, P4; [ErrInconsistent]
//     carries the evidence otherwise);
//   - the epoch record is the checkpoint's last entry, so its map root is
//     the latest the log commits to, and it is at most MaxAge + Skew old,
//     as is the witness quorum (P2, A3, A9);
//   - the handle's VRF index is proved under the pinned VRF key, and the map
//     proves that the returned change record is the latest for that index,
//     or that the handle was never registered (P1, P2, A1);
//   - the device set is the one the record commits to, the record's
//     authorizers are exactly the set's keys (R7), and in strict mode the set
//     is signed by the pinned account key for this handle and version (P6,
//     A2);
//   - every HPKE key deserializes with its suite: the sender encrypts to all
//     devices or fails, never silently skipping one.
//
// In audit mode ([Params.Audit], from the directory's audit_policy), a
// quorum of the audit policy's auditors has also vouched for the epoch
// checkpoint with audit statements dated between the epoch and now (each
// auditor replayed the log up to it and every rule held; step 2.2a,
// [Epoch.AuditStatements]), and the epoch is at most MaxAuditLag + Skew old
// (step 2.5a).
//
// A lookup does not check how a change was authorized (R1 to R6): auditors
// replay the log for that, and the owner's monitor reports every change.
// [LookupResult.Kind] still tells a sender that the latest change was a
// recovery.
//
// # Guarantees of monitoring
//
// When [VerifyMonitor] returns a result, its changes are the complete chain
// of versions after the known one, each included in the log under the
// accepted epoch checkpoint, the last one held by the map. A device added
// and removed again between two polls is therefore in the chain (A7,
// [MonitorResult.Transient]). Every change is checked against the
// authorization rules and classified by who authorized it: this device,
// another of the owner's devices, the account key, the directory's recovery
// path, or an unknown key; the last two, and any rule violation, are
// [Alert] values (P5).
//
// # Refusing a log
//
// Evidence that the log misbehaved, verified offline with the log's
// parameters alone ([CheckEvidence]: a kt-evidence/v1 fork, or a
// kt-evidence/v2 records, map-regression or version-conflict bundle; a
// map-root bundle needs a replay and does not count), is stored durably in
// the client's state, per
// log (origin and log key hash, [State.Refused]): from then on every
// lookup, encryption, monitoring poll and change of any [Client] on that
// store fails with [ErrLogRefused] (a [*LogRefusedError] naming the
// bundle's kind and id) without asking the directory. The bundles come
// from [Client.ReportEvidence] and from gossip (an auditor's 409 answer,
// or a bundle the client built itself). Nothing undoes a refusal: the user
// checks the evidence and re-pins the directory with new parameters.
//
// # Errors
//
// Every verification failure is a [*VerifyError] naming the step of
// design.md 12.2 or 13 that failed, wrapping one sentinel ([ErrMalformed],
// [ErrCheckpointSignature], [ErrWitnessQuorum], [ErrAuditQuorum],
// [ErrRollback], [ErrInconsistent], [ErrNotLatestEpoch],
// [ErrEpochInclusion], [ErrAuditLag], [ErrStale], [ErrVRF], [ErrMapProof],
// [ErrRecordMismatch], [ErrCommitment], [ErrAuthorizers], [ErrStrict],
// [ErrUnusableKey], [ErrMonitorGap]) and the underlying error; the audit
// errors carry their detail ([*AuditQuorumError]: which auditors did and did
// not vouch; [*AuditLagError]: the epoch, its age and the bound). A refused
// log fails with [ErrLogRefused] before any verification. A failure is never
// downgraded to a warning and there is no fallback to unverified keys.
//
// # Cost
//
// Verifying a lookup within an epoch the client already trusts costs one
// ECVRF verification and about a hundred SHA-256 compressions. The first
// lookup in a new epoch also verifies the log signature, the
// cosignatures and the audit statements (one Ed25519 verification each); an
// epoch part carrying the very checkpoint already trusted is not verified
// again.
package client
