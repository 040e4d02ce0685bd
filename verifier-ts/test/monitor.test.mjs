import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './vectors.mjs';
import { verifyObserved } from '../src/verify.mjs';

for (const v of load('monitor.json').vectors) {
  test(`monitor: ${v.name}`, () => {
    let o;
    try { o = { ok: true, r: verifyObserved(v) }; } catch (e) { if (!e.step) throw e; o = { ok: false, step: e.step, msg: e.message }; }
    if (!v.expect.ok) { assert.equal(o.ok, false, 'must fail'); assert.equal(o.step, v.expect.failure.step, o.msg); return; }
    assert.ok(o.ok, o.msg);
    assert.deepEqual(o.r.versions, v.expect.versions ?? []);
    assert.equal(o.r.alerts.length, v.expect.alerts ?? 0);
  });
}
