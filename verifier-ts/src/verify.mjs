// design.md 12.2 (lookup verification) and 13 (monitoring chains, as an observer).
import { VerifyError, hex, toHex, eq, ZERO32 } from './util.mjs';
import * as enc from './encodings.mjs';
import * as cp from './checkpoint.mjs';
import { parseVRFPublicKey, vrfVerify, vrfInput } from './vrf.mjs';
import { parseMapProof, verifyParsedMapProof } from './smt.mjs';
import { normalizeHandle } from './handle.mjs';
import { hpkeKeyUsable } from './hpke.mjs';

const fail = (step, msg) => { throw new VerifyError(step, msg); };
/** run f; any exception becomes a failure at step */
function at(step, f) { try { return f(); } catch (e) { if (e instanceof VerifyError) throw e; fail(step, e.message); } }

/**
 * Parameters a client pins (design.md 11).
 * With audit_policy (14.1) the client is in audit mode: 12.2 steps 2.2a and 2.5a apply, with the
 * audit lag bound max_audit_lag_ms (0 or absent: 30000).
 * prev_vrf_public_keys are the VRF keys before vrf_public_key in the rotation chain the client holds,
 * oldest first (11.2, client.Params.PrevVRFKeys); absent before any VRF key rotation.
 * @param {{origin:string,log_public_key:string,vrf_public_key:string,recovery_public_key_hex:string,witness_policy:string,max_age_ms:number,skew_ms:number,audit_policy?:string,max_audit_lag_ms?:number,prev_vrf_public_keys?:string[]}} p
 * @param {{insecureNoWitnesses?:boolean}} [opts]
 */
export function parseParams(p, opts = {}) {
  return at('params', () => {
    const logKey = cp.parseVkey(p.log_public_key, 1);
    if (logKey.name !== p.origin) throw new Error('log key name is not the origin');
    const policy = cp.parsePolicy(p.witness_policy);
    if (policy.quorum === null && !opts.insecureNoWitnesses) throw new Error('witness policy with quorum none');
    if (policy.log && !eq(policy.log.key, logKey.key)) throw new Error('witness policy names another log key');
    // 14.1: the audit policy, its auditors' keys none of the witnesses' keys, requiring a statement.
    let audit = null;
    if (p.audit_policy) {
      audit = cp.parsePolicy(p.audit_policy, 'auditor');
      if (audit.quorum === null) throw new Error('audit policy with quorum none');
      if (audit.log && !eq(audit.log.key, logKey.key)) throw new Error('audit policy names another log key');
      for (const a of audit.witnesses.values())
        for (const w of policy.witnesses.values()) if (eq(a.key.key, w.key.key)) throw new Error(`auditor ${a.name} uses the key of witness ${w.name}`);
    }
    const maxAuditLag = p.max_audit_lag_ms || 30000;
    if (maxAuditLag < 0 || (p.max_age_ms ?? 0) < 0 || (p.skew_ms ?? 0) < 0) throw new Error('negative max age, skew or max audit lag');
    const recovery = hex(p.recovery_public_key_hex);
    if (recovery.length !== 32) throw new Error('recovery key not 32 bytes');
    const prevVrfKeys = (p.prev_vrf_public_keys ?? []).map(parseVRFPublicKey);
    return { origin: p.origin, logKey, vrfKey: parseVRFPublicKey(p.vrf_public_key), prevVrfKeys, recovery, policy, audit,
      maxAge: p.max_age_ms ?? 60000, skew: p.skew_ms ?? 10000, maxAuditLag };
  });
}

const hexList = (l) => (l ?? []).map(h => { const b = hex(h); if (b.length !== 32) throw new Error('proof hash not 32 bytes'); return b; });

/** Parse an epoch part (12.1) without verifying it. */
export function parseEpochPart(P, e) {
  return at('parse', () => {
    const note = cp.parseNote(e.checkpoint);
    const recBytes = hex(e.epoch_record_hex);
    return { note, recBytes, record: enc.parseEpochRecord(recBytes),
      inclusion: hexList(e.inclusion_proof_hex), consistency: hexList(e.consistency_proof_hex) };
  });
}
/** Parse a trusted state: the client's own earlier verified epoch. */
export function parseTrusted(P, t) {
  if (!t) return null;
  const ep = parseEpochPart(P, { checkpoint: t.checkpoint, epoch_record_hex: t.epoch_record_hex });
  Object.assign(ep, at('parse', () => cp.parseCheckpointBody(ep.note.body, P.origin)));
  return { ...ep, quorumTime: t.quorum_time_unix };
}

/**
 * 12.2 step 2. Returns the new trusted state. trusted may be null; e may be null (then trusted is reused).
 * @param {ReturnType<typeof parseParams>} P
 */
export function verifyEpoch(P, trusted, e, nowMs, { checkFreshness = true } = {}) {
  let st;
  if (!e) {
    if (!trusted) fail('parse', 'no epoch part and no trusted state');
    st = trusted;
  } else {
    const ep = parseEpochPart(P, e);
    // 2.1
    if (!cp.verifyLogSignature(ep.note, P.logKey)) fail('checkpoint signature', 'no valid log signature');
    // the body is parsed after its signature verified: a changed body is a signature failure
    Object.assign(ep, at('parse', () => cp.parseCheckpointBody(ep.note.body, P.origin)));
    // 2.2: unknown keys ignored, cosignatures after now + s not counted
    let qt = null;
    if (P.policy.quorum !== null) {
      const times = at('witness quorum', () => cp.cosignatureTimes(ep.note, [...P.policy.witnesses.values()], Math.floor((nowMs + P.skew) / 1000)));
      qt = cp.quorumTime(P.policy, times);
      if (qt === null) fail('witness quorum', 'the witness policy is not satisfied');
    }
    // 2.2a: in audit mode, audit statements (tlog-cosignature/v1 by auditor keys) satisfy the audit
    // policy; one dated after now + s, or before the epoch timestamp truncated to the second − s,
    // is not counted; one by a policy key that does not verify fails.
    if (P.audit) {
      const lower = Math.floor(ep.record.timestamp / 1000) * 1000 - P.skew;
      const times = at('audit quorum', () => cp.cosignatureTimes(ep.note, [...P.audit.witnesses.values()], Math.floor((nowMs + P.skew) / 1000), lower));
      if (!cp.satisfied(P.audit, P.audit.quorum, new Set(times.keys()))) fail('audit quorum', 'the audit policy is not satisfied');
    }
    // 2.3
    if (trusted) {
      if (ep.size < trusted.size) fail('consistency', `rollback from size ${trusted.size} to ${ep.size}`);
      if (!cp.verifyConsistency(trusted.size, ep.size, trusted.root, ep.root, ep.consistency)) fail('consistency', 'inconsistent with the trusted checkpoint');
    }
    // 2.4
    if (ep.record.logSize !== ep.size - 1) fail('epoch record', 'the epoch record is not the last entry');
    if (!cp.verifyInclusion(ep.size - 1, ep.size, enc.leafHash(ep.recBytes), ep.inclusion, ep.root)) fail('epoch record', 'epoch record inclusion proof fails');
    st = { ...ep, quorumTime: qt };
  }
  // 2.5
  if (checkFreshness) {
    const ts = st.record.timestamp, bound = P.maxAge + P.skew;
    // 2.5a, before the other freshness checks: in audit mode the epoch is at most max audit lag + s old.
    if (P.audit && nowMs - ts > P.maxAuditLag + P.skew) fail('audit lag', 'epoch older than the audit lag bound plus skew');
    if (nowMs - ts > bound) fail('freshness', 'epoch older than max age plus skew');
    if (ts > nowMs + P.skew) fail('freshness', 'epoch timestamp in the future');
    if (st.quorumTime !== null && nowMs - st.quorumTime * 1000 > bound) fail('freshness', 'witness quorum older than max age plus skew');
    if (trusted && st.record.epoch < trusted.record.epoch) fail('freshness', 'epoch older than the trusted one');
  }
  return st;
}

/**
 * Full lookup verification, 12.2 steps 1-9.
 * @param {object} v {params, trusted, handle, response, now_unix_ms, pinned_account_key_hex}
 */
export function verifyLookup(v, opts = {}) {
  const ok = opts.onStep ?? (() => {});
  const P = parseParams(v.params, opts);
  ok('params', `origin ${P.origin}`);
  const trusted = parseTrusted(P, v.trusted);
  const r = v.response;
  const handle = at('handle', () => normalizeHandle(v.handle));
  if (r.handle !== undefined && r.handle !== handle) fail('handle', 'the answer is for another handle');
  ok('handle', handle);
  // 1. parse every part
  const parts = at('parse', () => {
    const pi = hex(r.vrf_proof_hex); if (pi.length !== 80) throw new Error('VRF proof not 80 bytes');
    const mp = parseMapProof(hex(r.map_proof_hex));
    const re = parseReindexed(r);
    const present = !!r.change_record_hex;
    let rec = null, opening = null, value = null;
    if (present) {
      rec = enc.parseChangeRecord(hex(r.change_record_hex));
      opening = hex(r.opening_hex ?? ''); if (opening.length !== 32) throw new Error('opening not 32 bytes');
      value = hex(r.device_set_hex ?? ''); enc.parseDeviceSet(value);
    } else if (r.opening_hex || r.device_set_hex) throw new Error('opening or device set without a change record');
    return { pi, mp, ...re, rec, opening, value };
  });
  ok('parse', 'every part parses');
  // 2. epoch part
  const st = verifyEpoch(P, trusted, r.epoch ?? null, v.now_unix_ms);
  ok('epoch', `epoch ${st.record.epoch}: log size ${st.size}, signed by the log, witness quorum at ${st.quorumTime ?? 'none'}, consistent, epoch record included, fresh`);
  // 3. VRF
  const beta = vrfVerify(P.vrfKey, vrfInput(handle), parts.pi);
  if (!beta) fail('vrf', 'VRF proof does not verify');
  const index = beta.subarray(0, 32);
  ok('vrf', `index ${toHex(index)}`);
  // 4. map; after a VRF key rotation (11.2) at the index the record or the absence sits at
  const { recordIndex, notMoved } = verifyReindexed(P, st, handle, index, parts);
  ok('map proof', (parts.rec ? 'the map holds the record' : 'the map holds no record: not registered') +
    (notMoved ? ` (fallback: not moved yet, at its index ${toHex(recordIndex)} under the previous VRF key)` : !eq(recordIndex, index) ? ` (moved record at its index ${toHex(recordIndex)} under an earlier VRF key)` : ''));
  const out = { index_hex: toHex(index), epoch: st.record.epoch, trusted_size: st.size, state: st };
  if (!eq(recordIndex, index)) out.record_index_hex = toHex(recordIndex);
  if (notMoved) out.not_moved = true;
  if (!parts.rec) return { ...out, registered: false };
  // 5. record index
  if (!eq(parts.rec.index, recordIndex)) fail('record', 'the record is for another index');
  // 6. commitment and R7
  ok('record', `version ${parts.rec.version}, kind ${parts.rec.kind}`);
  const ds = at('commitment', () => enc.openCommitment(parts.rec, parts.opening, parts.value));
  ok('commitment', `opens to a set of ${ds.devices.length} device${ds.devices.length === 1 ? '' : 's'}; authorizers match (R7)`);
  // 7. strict mode
  if (v.pinned_account_key_hex) {
    const K = hex(v.pinned_account_key_hex);
    if (!ds.accountKey || !eq(ds.accountKey, K)) fail('strict mode', 'the set does not carry the pinned account key');
    if (!enc.verifyAccount(P.origin, parts.rec.index, parts.rec.version, ds)) fail('strict mode', 'account signature does not verify');
  }
  if (v.pinned_account_key_hex) ok('strict mode', 'the pinned account key signed the set');
  // 8. HPKE keys
  for (const d of ds.devices) if (!enc.KEM_SIZES[d.kem] || !hpkeKeyUsable(d.kem, d.hpkePublicKey)) fail('hpke keys', `device ${toHex(d.id)}: HPKE key does not deserialize`);
  ok('hpke keys', 'every device key deserializes');
  // 9.
  return { ...out, registered: true, version: parts.rec.version, kind: parts.rec.kind, device_ids_hex: ds.devices.map(d => toHex(d.id)), deviceSet: ds, record: parts.rec };
}

/**
 * 12.2 step 1 for LookupResponse fields 8-10 (11.2; client parseReindexed, same checks in the same
 * order): a moved record's VRF proof, or the fallback's VRF proof under the previous key, and the
 * map proof at the record's or the fallback's index. Throws (step 'parse').
 */
function parseReindexed(r) {
  const out = { recordVrfProof: null, prevVrfProof: null, prevMp: null };
  const rv = hex(r.record_vrf_proof_hex ?? '');
  if (rv.length) {
    if (rv.length !== 80) throw new Error(`record VRF proof has ${rv.length} bytes, want 80`);
    out.recordVrfProof = rv;
  }
  const pv = hex(r.prev_vrf_proof_hex ?? ''), pm = hex(r.prev_map_proof_hex ?? '');
  if (!pv.length && !pm.length) return out;
  if (out.recordVrfProof && pv.length) throw new Error('an answer with both a moved record\'s VRF proof and a fallback');
  if (out.recordVrfProof && !pm.length) throw new Error('a moved record\'s VRF proof without the map proof at the record\'s index');
  if (!out.recordVrfProof && (pv.length !== 80 || !pm.length)) throw new Error(`the fallback needs an 80-byte VRF proof (${pv.length} bytes) and a map proof (${pm.length} bytes)`);
  out.prevMp = parseMapProof(pm);
  if (pv.length) out.prevVrfProof = pv;
  return out;
}

/**
 * 12.2 step 4 with the steps 11.2 adds after a VRF key rotation (client verifyReindexed, same
 * checks in the same order). index is the handle's index under the current key (step 3).
 * Returns { recordIndex, notMoved }: the index the record or the absence is proved at.
 *  - fallback given: the current index is absent; the handle's VRF proof under the previous key
 *    gives its old index; the map proves the record (or absence) there.
 *  - membership at index of a record whose index field differs: a moved record; the map proves
 *    its leaf at its own index, and its VRF proof under an earlier key (newest first) gives that index.
 *  - absence at index after a rotation without a fallback fails (it could hide a handle not moved yet).
 */
function verifyReindexed(P, st, handle, index, parts) {
  const root = st.record.mapRoot;
  const leaf = parts.rec ? enc.leafHash(parts.rec.bytes) : null;
  const alpha = vrfInput(handle);
  if (parts.prevVrfProof) {
    if (!P.prevVrfKeys.length) fail('vrf', 'a fallback proof, but the VRF key was never rotated');
    at('map proof', () => verifyParsedMapProof(root, index, null, parts.mp));
    const beta = vrfVerify(P.prevVrfKeys[P.prevVrfKeys.length - 1], alpha, parts.prevVrfProof);
    if (!beta) fail('vrf', 'fallback proof under the previous VRF key does not verify');
    const old = beta.subarray(0, 32);
    at('map proof', () => verifyParsedMapProof(root, old, leaf, parts.prevMp));
    return { recordIndex: old, notMoved: true };
  }
  at('map proof', () => verifyParsedMapProof(root, index, leaf, parts.mp));
  if (!parts.rec) {
    if (P.prevVrfKeys.length) fail('map proof', 'the handle\'s index under the current VRF key is absent and the answer has no fallback under the previous key');
    return { recordIndex: index, notMoved: false };
  }
  if (eq(parts.rec.index, index)) {
    if (parts.recordVrfProof) fail('parse', 'a moved record\'s VRF proof for a record that was not moved');
    return { recordIndex: index, notMoved: false };
  }
  // 4': a record moved and not changed since.
  if (!parts.recordVrfProof) fail('record', 'the record is for another index, and the answer has no VRF proof of the record\'s index');
  if (!parts.prevMp) fail('parse', 'a moved record without the map proof at its own index');
  at('map proof', () => verifyParsedMapProof(root, parts.rec.index, leaf, parts.prevMp));
  for (let i = P.prevVrfKeys.length - 1; i >= 0; i--) {
    const beta = vrfVerify(P.prevVrfKeys[i], alpha, parts.recordVrfProof);
    if (!beta) continue;
    if (!eq(beta.subarray(0, 32), parts.rec.index)) fail('record', 'the moved record\'s index is not the handle\'s index under that earlier VRF key');
    return { recordIndex: beta.subarray(0, 32), notMoved: false };
  }
  fail('vrf', 'the moved record\'s VRF proof verifies under no earlier VRF key');
}

/** design.md 6.1 R1-R6 (api.CheckChange): returns the rule broken, or null. */
export function checkChange(origin, recoveryKey, prev, rec) {
  const has = (auths, role, key) => { const h = sha256Key(key); return auths.some(a => a.role === role && eq(a.digest, h)); };
  if (!enc.verifyChangeSignature(origin, rec)) return 'R1 signature';
  if (rec.version !== (prev ? prev.version + 1 : 1)) return 'R2 version';
  if (!eq(rec.prev, prev ? enc.leafHash(prev.bytes) : ZERO32)) return 'R3 prev';
  switch (rec.kind) {
    case 1:
      if (prev && prev.authorizers.length > 0) return 'R4 enroll';
      if (!rec.authorizers.some(a => eq(a.digest, sha256Key(rec.signer)))) return 'R4 enroll';
      break;
    case 2: case 3:
      if (!prev || !has(prev.authorizers, rec.kind === 2 ? 1 : 2, rec.signer)) return 'R5 device / account';
      break;
    case 4:
      if (!prev || !eq(rec.signer, recoveryKey)) return 'R6 recovery';
      break;
  }
  return null;
}
import { sha256 as sha256Key } from './util.mjs';

/**
 * Monitoring chain as an observer from version 0 (13, client.VerifyObserved): steps 1-4, no
 * freshness, no classification. v: {params, index_hex, response, now_unix_ms}.
 */
export function verifyObserved(v, opts = {}) {
  const P = parseParams(v.params, opts);
  const r = v.response;
  const index = at('parse', () => { const b = hex(v.index_hex); if (b.length !== 32) throw new Error('index not 32 bytes'); return b; });
  const parsed = at('parse', () => ({
    mp: parseMapProof(hex(r.map_proof_hex)),
    changes: (r.changes ?? []).map(c => {
      const rec = enc.parseChangeRecord(hex(c.change_record_hex));
      const opening = hex(c.opening_hex); if (opening.length !== 32) throw new Error('opening not 32 bytes');
      const value = hex(c.device_set_hex); enc.parseDeviceSet(value);
      if (!Number.isSafeInteger(c.log_index) || c.log_index < 0) throw new Error('bad log index');
      return { rec, opening, value, logIndex: c.log_index, inclusion: hexList(c.inclusion_proof_hex) };
    }),
  }));
  // 1. epoch part, no freshness (the observer holds no trusted epoch)
  const st = verifyEpoch(P, null, r.epoch ?? null, v.now_unix_ms, { checkFreshness: false });
  // 3. chain
  let prevLeaf = ZERO32, prevIdx = -1, version = 0;
  for (const c of parsed.changes) {
    if (!eq(c.rec.index, index)) fail('monitor chain', 'record for another index');
    if (c.rec.version !== version + 1) fail('monitor chain', `version ${c.rec.version} after ${version}`);
    if (!eq(c.rec.prev, prevLeaf)) fail('monitor chain', `version ${c.rec.version}: prev is not the previous record`);
    if (c.logIndex <= prevIdx || c.logIndex >= st.record.logSize) fail('monitor chain', `version ${c.rec.version}: log index out of order or range`);
    if (!cp.verifyInclusion(c.logIndex, st.size, enc.leafHash(c.rec.bytes), c.inclusion, st.root)) fail('monitor chain', `version ${c.rec.version}: inclusion proof fails`);
    prevLeaf = enc.leafHash(c.rec.bytes); prevIdx = c.logIndex; version = c.rec.version;
  }
  // 2. map proof (checked after the chain, as the Go client does: when both fail the chain is named): membership of the last record's leaf, or absence only with no records (k = 0)
  const last = parsed.changes.length ? parsed.changes[parsed.changes.length - 1].rec : null;
  at('map proof', () => verifyParsedMapProof(st.record.mapRoot, index, last ? enc.leafHash(last.bytes) : null, parsed.mp));
  // 4. rules and commitments: a broken rule is an alert; a commitment that does not open fails
  const alerts = [];
  let prev = null;
  for (const c of parsed.changes) {
    const rule = checkChange(P.origin, P.recovery, prev, c.rec);
    if (rule) alerts.push({ version: c.rec.version, rule });
    try { enc.openCommitment(c.rec, c.opening, c.value); }
    catch (e) { if (e.kind === 'R7') alerts.push({ version: c.rec.version, rule: 'R7 authorizers' }); else fail('commitment', e.message); }
    prev = c.rec;
  }
  return { versions: parsed.changes.map(c => c.rec.version), alerts, epoch: st.record.epoch };
}
