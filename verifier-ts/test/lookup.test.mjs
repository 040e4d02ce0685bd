import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './vectors.mjs';
import { toHex } from '../src/util.mjs';
import { parseParams, parseTrusted, verifyEpoch, verifyLookup } from '../src/verify.mjs';

function outcome(f) {
  try { return { ok: true, r: f() }; } catch (e) { if (!e.step) throw e; return { ok: false, step: e.step, msg: e.message }; }
}
for (const v of load('epochs.json').vectors) {
  test(`epochs: ${v.name}`, () => {
    const o = outcome(() => { const P = parseParams(v.params); return verifyEpoch(P, parseTrusted(P, v.trusted), v.epoch_part, v.now_unix_ms); });
    if (!v.expect.ok) { assert.equal(o.ok, false, 'must fail'); assert.equal(o.step, v.expect.failure.step, o.msg); return; }
    assert.ok(o.ok, o.msg);
    assert.deepEqual({ size: o.r.size, root_hex: toHex(o.r.root), epoch: o.r.record.epoch, quorum_time_unix: o.r.quorumTime },
      { size: v.expect.size, root_hex: v.expect.root_hex, epoch: v.expect.epoch, quorum_time_unix: v.expect.quorum_time_unix });
  });
}
for (const v of load('lookups.json').vectors) {
  test(`lookups: ${v.name}`, () => {
    const o = outcome(() => verifyLookup(v));
    if (!v.expect.ok) { assert.equal(o.ok, false, 'must fail'); assert.equal(o.step, v.expect.failure.step, o.msg); return; }
    assert.ok(o.ok, o.msg);
    const { ok, ...want } = v.expect;
    const got = { epoch: o.r.epoch, index_hex: o.r.index_hex, trusted_size: o.r.trusted_size };
    if (o.r.registered) Object.assign(got, { registered: true, version: o.r.version, kind: o.r.kind });
    if (o.r.registered && o.r.device_ids_hex.length) got.device_ids_hex = o.r.device_ids_hex;
    if (o.r.record_index_hex) got.record_index_hex = o.r.record_index_hex;
    if (o.r.not_moved) got.not_moved = true;
    assert.deepEqual(got, want);
  });
}
