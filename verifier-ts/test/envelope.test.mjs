import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './vectors.mjs';
import { hex, toHex } from '../src/util.mjs';
import { openEnvelope } from '../src/envelope.mjs';

for (const v of load('envelopes.json').vectors) {
  test(`envelopes: ${v.name}`, async () => {
    const dev = { id: hex(v.device_id_hex), kem: v.kem, kdf: v.kdf, aead: v.aead, privateKey: hex(v.private_key_hex) };
    let r, err;
    try { r = await openEnvelope(dev, hex(v.envelope_hex)); } catch (e) { err = e; }
    if (v.error) { assert.ok(err, 'must fail'); assert.equal(err.constructor.name, 'EnvelopeError', err.message); return; }
    assert.ok(!err, err?.message);
    assert.equal(toHex(r.plaintext), v.plaintext_hex);
    assert.deepEqual([r.from, r.to, r.owner], [v.from, v.to, v.owner]);
  });
}
