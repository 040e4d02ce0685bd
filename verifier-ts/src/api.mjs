// The HTTP/JSON API (design.md 10.1): Connect-style unary JSON calls, byte fields in base64,
// converted to the hex shapes of testdata/vectors that verifyLookup takes.
import { toHex } from './util.mjs';

function b64hex(s) {
  if (!s) return '';
  const bin = atob(s); const b = new Uint8Array(bin.length);
  for (let i = 0; i < b.length; i++) b[i] = bin.charCodeAt(i);
  return toHex(b);
}
const b64text = (s) => new TextDecoder().decode(Uint8Array.from(atob(s ?? ''), c => c.charCodeAt(0)));

/** POST base/kt.v1.Directory/<method>; throws with the API's error code and message. */
export async function call(base, method, body, fetchImpl = fetch) {
  const resp = await fetchImpl(`${base}/kt.v1.Directory/${method}`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body ?? {}),
  });
  const j = await resp.json();
  if (!resp.ok) throw new Error(`${method}: HTTP ${resp.status} ${j.code}: ${j.message}`);
  return j;
}

/** Parameters (kt.v1.Parameters) in the shape of the vectors' params. */
export function paramsFromAPI(p, { maxAgeMs = 60000, skewMs = 10000, maxAuditLagMs = 30000 } = {}) {
  return { origin: p.origin, log_public_key: p.logPublicKey, vrf_public_key: p.vrfPublicKey,
    recovery_public_key_hex: b64hex(p.recoveryPublicKey), witness_policy: p.witnessPolicy,
    audit_policy: p.auditPolicy ?? '', max_age_ms: maxAgeMs, skew_ms: skewMs, max_audit_lag_ms: maxAuditLagMs };
}

/** kt.v1.EpochPart → vectors' epoch part */
export function epochFromAPI(e) {
  if (!e) return null;
  return { checkpoint: b64text(e.checkpoint), epoch_record_hex: b64hex(e.epochRecord),
    inclusion_proof_hex: (e.inclusionProof ?? []).map(b64hex), consistency_proof_hex: (e.consistencyProof ?? []).map(b64hex) };
}

/** kt.v1.LookupResponse → vectors' lookup response */
export function lookupFromAPI(r) {
  const out = { handle: r.handle, vrf_proof_hex: b64hex(r.vrfProof), map_proof_hex: b64hex(r.mapProof), epoch: epochFromAPI(r.epoch) };
  if (r.changeRecord) Object.assign(out, { change_record_hex: b64hex(r.changeRecord), opening_hex: b64hex(r.opening), device_set_hex: b64hex(r.deviceSet) });
  // fields 8-10, after a VRF key rotation (design.md 11.2)
  if (r.recordVrfProof) out.record_vrf_proof_hex = b64hex(r.recordVrfProof);
  if (r.prevVrfProof) out.prev_vrf_proof_hex = b64hex(r.prevVrfProof);
  if (r.prevMapProof) out.prev_map_proof_hex = b64hex(r.prevMapProof);
  return out;
}
