// design.md 5: log entries, leaf hashes, device sets; 4.3 signed statements; 4.4 commitments.
import { ed25519 } from '@noble/curves/ed25519.js';
import { sha512 } from '@noble/hashes/sha2.js';
import { validateVRFKey, vrfVerify } from './vrf.mjs';
import { Reader, sha256, concat, u16, u64, eq, ZERO32, toHex } from './util.mjs';

export const KEM_SIZES = { 0x0010: 65, 0x0020: 32, 0x0041: 1184, 0x647a: 1216 }; // 4.2
export const KDFS = [1, 2, 3];
export const AEADS = [1, 2, 3];

/** 5.2 */
export function leafHash(e) { return sha256(new Uint8Array([0]), e); }

/** 5.1 change record */
export function parseChangeRecord(b) {
  const r = new Reader(b);
  if (r.u8() !== 1) throw new Error('format version');
  if (r.u8() !== 1) throw new Error('not a change record');
  const index = r.bytes(32), version = r.u64(), commitment = r.bytes(32), prev = r.bytes(32);
  const kind = r.u8();
  if (version === 0) throw new Error('version 0');
  if (kind < 1 || kind > 4) throw new Error('auth kind');
  const n = r.u8();
  if (n > 65) throw new Error('too many authorizers');
  const authorizers = [];
  let accounts = 0;
  for (let i = 0; i < n; i++) {
    const role = r.u8(); const digest = r.bytes(32);
    if (role !== 1 && role !== 2) throw new Error('authorizer role');
    if (role === 2) accounts++;
    const a = { role, digest };
    if (i > 0 && cmpAuth(authorizers[i - 1], a) >= 0) throw new Error('authorizers not strictly increasing');
    authorizers.push(a);
  }
  if (accounts > 1) throw new Error('two account authorizers');
  const signed = b.subarray(0, r.o);
  const signer = r.bytes(32), signature = r.bytes(64);
  r.done();
  return { index, version, commitment, prev, kind, authorizers, signer, signature, signed, bytes: b };
}
export function cmpAuth(a, b) {
  if (a.role !== b.role) return a.role - b.role;
  for (let i = 0; i < 32; i++) if (a.digest[i] !== b.digest[i]) return a.digest[i] - b.digest[i];
  return 0;
}

/** 5.1 epoch record */
export function parseEpochRecord(b) {
  const r = new Reader(b);
  if (r.u8() !== 1) throw new Error('format version');
  if (r.u8() !== 2) throw new Error('not an epoch record');
  const epoch = r.u64(), timestamp = r.u64(), logSize = r.u64(), mapRoot = r.bytes(32), mapSize = r.u64();
  r.done();
  return { epoch, timestamp, logSize, mapRoot, mapSize };
}

/** 5.1: the proof size of each of a rotation record's two proofs, by key kind (1 log, 2 VRF, 3 recovery); 0 unknown. */
export function rotationProofSize(kind) { return kind === 1 || kind === 3 ? 64 : kind === 2 ? 80 : 0; }

/** 5.1, 11.1, 11.2 rotation record (type 0x03), as api.ParseRotationRecord: format only. */
export function parseRotationRecord(b) {
  const r = new Reader(b);
  if (r.u8() !== 1) throw new Error('format version');
  if (r.u8() !== 3) throw new Error('not a rotation record');
  const kind = r.u8(), size = rotationProofSize(kind);
  if (size === 0) throw new Error(`unknown key kind ${kind}`);
  const sequence = r.u64();
  if (sequence === 0) throw new Error('sequence 0');
  const oldKey = r.bytes(32), newKey = r.bytes(32);
  if (eq(oldKey, newKey)) throw new Error('the new key is the old key');
  const signed = b.subarray(0, r.o);
  const oldProof = r.bytes(size), newProof = r.bytes(size);
  r.done();
  return { kind, sequence, oldKey, newKey, oldProof, newProof, signed, bytes: b };
}

/** 11.2 move entry (type 0x04), as api.ParseMoveEntry: format only (the rules M1-M5 are the auditors'). */
export function parseMoveEntry(b) {
  const r = new Reader(b);
  if (r.u8() !== 1) throw new Error('format version');
  if (r.u8() !== 4) throw new Error('not a move entry');
  const sequence = r.u64();
  if (sequence === 0) throw new Error('rotation sequence 0');
  const oldIndex = r.bytes(32), newIndex = r.bytes(32);
  if (eq(oldIndex, newIndex)) throw new Error('the new index is the old index');
  const leaf = r.bytes(32);
  r.done();
  return { sequence, oldIndex, newIndex, leaf };
}

/** 5.1 any log entry, as api.ParseEntry: { type: 'change_record'|'epoch_record'|'rotation_record'|'move_entry', entry }. */
export function parseEntry(b) {
  if (b.length < 2) throw new Error('truncated header');
  if (b[0] !== 1) throw new Error('format version');
  switch (b[1]) {
    case 1: return { type: 'change_record', entry: parseChangeRecord(b) };
    case 2: return { type: 'epoch_record', entry: parseEpochRecord(b) };
    case 3: return { type: 'rotation_record', entry: parseRotationRecord(b) };
    case 4: return { type: 'move_entry', entry: parseMoveEntry(b) };
    default: throw new Error(`unknown entry type ${b[1]}`);
  }
}

/** 5.3 device set */
export function parseDeviceSet(b) {
  const r = new Reader(b);
  // 5.3: format 0x01, or 0x02 with a 32-byte message-signing key per device (all zero: none yet).
  const format = r.u8();
  if (format !== 1 && format !== 2) throw new Error('format version');
  const accountId = r.bytes(16);
  const d = r.u8();
  if (d > 64) throw new Error('too many devices');
  const devices = [];
  for (let i = 0; i < d; i++) {
    const id = r.bytes(16);
    const kem = r.u16(), kdf = r.u16(), aead = r.u16(), L = r.u16();
    if (!(kem in KEM_SIZES) || !KDFS.includes(kdf) || !AEADS.includes(aead)) throw new Error('unknown HPKE suite');
    if (L !== KEM_SIZES[kem]) throw new Error('HPKE key length');
    const hpkePublicKey = r.bytes(L), signingKey = r.bytes(32);
    const messageKey = format === 2 ? r.bytes(32) : null;
    const created = r.u64();
    if (i > 0 && cmpBytes(devices[i - 1].id, id) >= 0) throw new Error('device IDs not strictly increasing');
    devices.push({ id, kem, kdf, aead, hpkePublicKey, signingKey, messageKey, created });
  }
  const present = r.u8();
  if (present > 1) throw new Error('account key flag');
  let accountKey = null, accountSignature = null;
  if (present) { accountKey = r.bytes(32); accountSignature = r.bytes(64); }
  r.done();
  // 4, 5.3: every key of the set distinct, message keys (other than zero) included.
  const keys = devices.map(x => toHex(x.signingKey));
  for (const x of devices) if (x.messageKey && x.messageKey.some(v => v !== 0)) keys.push(toHex(x.messageKey));
  if (accountKey) keys.push(toHex(accountKey));
  if (new Set(keys).size !== keys.length) throw new Error('keys not distinct');
  return { format, accountId, devices, accountKey, accountSignature, bytes: b, unsigned: present ? b.subarray(0, b.length - 64) : b };
}
export function cmpBytes(a, b) { for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i]; return a.length - b.length; }

/** authorizers of a device set (5.3), sorted */
export function setAuthorizers(ds) {
  const a = ds.devices.map(x => ({ role: 1, digest: sha256(x.signingKey) }));
  if (ds.accountKey) a.push({ role: 2, digest: sha256(ds.accountKey) });
  return a.sort(cmpAuth);
}

function originBytes(origin) { const o = new TextEncoder().encode(origin); if (o.length > 65535) throw new Error('origin too long'); return concat(u16(o.length), o); }
/** 4.3 */
export function changeStatement(origin, rec) { return concat('kt/v1/change', new Uint8Array([0]), originBytes(origin), rec.signed); }
/** 4.3: the rotation statement, the message (kinds 1, 3) or ECVRF alpha (kind 2) of both proofs. */
export function rotationStatement(origin, rot) { return concat('kt/v1/rotate', new Uint8Array([0]), originBytes(origin), rot.signed); }
/**
 * 11.1, 11.2 (api.VerifyRotation): both proofs verify over the rotation statement: Ed25519 for
 * kinds 1 and 3; for kind 2 ECVRF proofs (vrf.VerifyRotationProof: each key a valid VRF key,
 * RFC 9381 5.4.5). The chain (sequence, old key = current key) is not checked here.
 */
export function verifyRotationProofs(origin, rot) {
  const msg = rotationStatement(origin, rot);
  if (rot.kind === 2) {
    const ok = (pk, pi) => { try { validateVRFKey(pk); } catch { return false; } return vrfVerify(pk, msg, pi) !== null; };
    return ok(rot.oldKey, rot.oldProof) && ok(rot.newKey, rot.newProof);
  }
  return verifyEd25519(rot.oldKey, msg, rot.oldProof) && verifyEd25519(rot.newKey, msg, rot.newProof);
}
export function accountStatement(origin, index, version, ds) {
  return concat('kt/v1/device-set', new Uint8Array([0]), originBytes(origin), index, u64(version), ds.unsigned);
}
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const le = (b) => { let x = 0n; for (let i = b.length - 1; i >= 0; i--) x = (x << 8n) | BigInt(b[i]); return x; };
/**
 * Ed25519 with Go's crypto/ed25519 rules (design.md 4): S < L, the key may be non-canonical or of
 * small order, and the cofactorless equation R = [S]B - [k]A is checked by comparing encodings
 * (so a non-canonical R never verifies). noble's own verify is cofactored and refuses small-order
 * keys, which would accept or refuse signatures that Go does not.
 */
export function verifyEd25519(pub, msg, sig) {
  if (pub.length !== 32 || sig.length !== 64) return false;
  const S = le(sig.subarray(32));
  if (S >= L) return false;
  let A;
  try { A = ed25519.Point.fromBytes(pub, true); } catch { return false; }
  const k = le(sha512(concat(sig.subarray(0, 32), pub, msg))) % L;
  const SB = S === 0n ? ed25519.Point.ZERO : ed25519.Point.BASE.multiply(S);
  const kA = k === 0n ? ed25519.Point.ZERO : A.multiplyUnsafe(k);
  return eq(SB.subtract(kA).toBytes(), sig.subarray(0, 32));
}
export function verifyChangeSignature(origin, rec) { return verifyEd25519(rec.signer, changeStatement(origin, rec), rec.signature); }
export function verifyAccount(origin, index, version, ds) {
  if (!ds.accountKey) return false;
  return verifyEd25519(ds.accountKey, accountStatement(origin, index, version, ds), ds.accountSignature);
}

/** 4.4 */
export function commit(opening, index, version, value) {
  return sha256('kt/v1/commit', new Uint8Array([0]), opening, index, u64(version), value);
}
/** 12.2 step 6: open the record's commitment and check R7. Throws {step:'commitment'}. */
export function openCommitment(rec, opening, value) {
  if (opening.length !== 32) { const e = new Error('opening length'); e.kind = 'commitment'; throw e; }
  if (!eq(commit(opening, rec.index, rec.version, value), rec.commitment)) { const e = new Error('commitment does not open'); e.kind = 'commitment'; throw e; }
  let ds;
  try { ds = parseDeviceSet(value); } catch (err) { const e = new Error('device set: ' + err.message); e.kind = 'malformed'; throw e; }
  const want = setAuthorizers(ds);
  if (want.length !== rec.authorizers.length || want.some((a, i) => cmpAuth(a, rec.authorizers[i]) !== 0)) {
    const e = new Error('R7: authorizers are not the set\'s keys'); e.kind = 'R7'; throw e;
  }
  return ds;
}
export { ZERO32 };
