import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './vectors.mjs';
import { hex } from '../src/util.mjs';
import { verifyEvidence } from '../src/evidence.mjs';

const ERR = { ErrMalformed: 'malformed', ErrSignature: 'signature', ErrProof: 'proof', ErrNotEvidence: 'not evidence' };
for (const v of load('evidence.json').vectors) {
  test(`evidence: ${v.name}`, () => {
    let r, err;
    try { r = verifyEvidence(v.origin, v.log_public_key, hex(v.recovery_public_key_hex), v.bundle); } catch (e) { if (!e.kind) throw e; err = e; }
    if (!v.expect.ok) { assert.ok(err, 'must fail'); assert.equal(err.kind, ERR[v.expect.error], err.message); return; }
    assert.ok(!err, err?.message);
    assert.equal(r.kind, v.expect.kind);
    assert.equal(r.needsReplay, v.expect.needs_replay ?? false);
  });
}
