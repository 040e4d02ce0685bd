// kt-verifier: an independent verifier of docs/design.md (see README.md).
export { VerifyError, hex, toHex } from './util.mjs';
export { normalizeHandle, InvalidHandleError } from './handle.mjs';
export { vrfVerify, vrfInput, parseVRFPublicKey } from './vrf.mjs';
export { verifyMapProof, MapProofError } from './smt.mjs';
export * as encodings from './encodings.mjs';
export * as checkpoint from './checkpoint.mjs';
export { parseParams, parseTrusted, verifyEpoch, verifyLookup, verifyObserved, checkChange } from './verify.mjs';
export { verifyEvidence, EvidenceError } from './evidence.mjs';
export { openEnvelope, parseEnvelope, EnvelopeError } from './envelope.mjs';
