// Lookups across a VRF key rotation (design.md 11.2): more tampered answers, each changing one part
// of an honest rotation vector of lookups.json (kept out of the vectors for their size budget). The
// expected steps are those the Go client (client.VerifyLookup, client/verify_reindex.go) gives for
// the same edits (checked when they were written).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './vectors.mjs';
import { verifyLookup } from '../src/verify.mjs';

const vs = load('lookups.json').vectors;
const find = (prefix) => { const v = vs.find(x => x.name.startsWith(prefix)); assert.ok(v, prefix); return structuredClone(v); };
const moved = () => find('rotation: a moved handle');
const fallback = () => find('rotation: a handle not moved yet');

function step(v) {
  try { verifyLookup(v); } catch (e) { if (!e.step) throw e; return e.step; }
  return 'ok';
}
const cases = [
  ['control: the moved handle verifies', 'ok', moved, () => {}],
  ['control: the fallback verifies', 'ok', fallback, () => {}],
  ['parse: both a moved record\'s VRF proof and a fallback', 'parse', moved, (v) => { v.response.prev_vrf_proof_hex = fallback().response.prev_vrf_proof_hex; }],
  ['parse: a moved record\'s VRF proof without its map proof', 'parse', moved, (v) => { delete v.response.prev_map_proof_hex; }],
  ['parse: a moved record\'s VRF proof of 79 bytes', 'parse', moved, (v) => { v.response.record_vrf_proof_hex = v.response.record_vrf_proof_hex.slice(0, 158); }],
  ['parse: a fallback VRF proof of 79 bytes', 'parse', fallback, (v) => { v.response.prev_vrf_proof_hex = v.response.prev_vrf_proof_hex.slice(0, 158); }],
  ['parse: a fallback VRF proof without its map proof', 'parse', fallback, (v) => { delete v.response.prev_map_proof_hex; }],
  ['parse: a fallback map proof truncated', 'parse', fallback, (v) => { v.response.prev_map_proof_hex = v.response.prev_map_proof_hex.slice(0, -2); }],
  ['vrf: the moved record\'s VRF proof is another handle\'s', 'vrf', moved, (v) => { v.response.record_vrf_proof_hex = fallback().response.prev_vrf_proof_hex; }],
  ['vrf: a fallback for a client that knows no earlier VRF key', 'vrf', fallback, (v) => { delete v.params.prev_vrf_public_keys; }],
  ['map proof: the moved record\'s map proof at its old index is at another index', 'map proof', moved, (v) => { v.response.prev_map_proof_hex = fallback().response.prev_map_proof_hex; }],
  ['map proof: the fallback\'s record left out (absence claimed at the old index)', 'map proof', fallback, (v) => {
    delete v.response.change_record_hex; delete v.response.opening_hex; delete v.response.device_set_hex;
  }],
  ['map proof: a fallback although the current index holds the record', 'map proof', moved, (v) => {
    v.response.prev_vrf_proof_hex = v.response.record_vrf_proof_hex; delete v.response.record_vrf_proof_hex;
  }],
];
for (const [name, want, base, edit] of cases) {
  test(`rotation: ${name}`, () => { const v = base(); edit(v); assert.equal(step(v), want); });
}
