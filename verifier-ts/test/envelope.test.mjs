import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './vectors.mjs';
import { hex, toHex } from '../src/util.mjs';
import { openEnvelope, parseEnvelope, messageStatement, verifyEnvelopeSignature } from '../src/envelope.mjs';

const ORIGIN = load('encodings.json').origin;

for (const v of load('envelopes.json').vectors) {
  test(`envelopes: ${v.name}`, async () => {
    const dev = { id: hex(v.device_id_hex), kem: v.kem, kdf: v.kdf, aead: v.aead, privateKey: hex(v.private_key_hex) };
    let r, err;
    // Format 2: the sender fields, the message statement and the signature.
    if (v.signature_valid !== undefined) {
      const e = parseEnvelope(hex(v.envelope_hex));
      assert.equal(e.version, 2);
      assert.equal(toHex(e.senderDevice), v.sender_device_hex);
      assert.equal(Number(e.timestamp), v.timestamp_ms);
      assert.equal(toHex(e.messageId), v.message_id_hex);
      assert.equal(toHex(messageStatement(ORIGIN, e)), v.message_statement_hex);
      assert.equal(verifyEnvelopeSignature(ORIGIN, e, hex(v.sender_message_key_hex)), v.signature_valid);
    }
    try { r = await openEnvelope(dev, hex(v.envelope_hex)); } catch (e) { err = e; }
    if (v.error) { assert.ok(err, 'must fail'); assert.equal(err.constructor.name, 'EnvelopeError', err.message); return; }
    assert.ok(!err, err?.message);
    assert.equal(toHex(r.plaintext), v.plaintext_hex);
    assert.deepEqual([r.from, r.to, r.owner], [v.from, v.to, v.owner]);
  });
}

// Format 2 beyond the vectors: the signature covers every byte before it.
test('envelopes: format 2, every byte is covered by the signature', () => {
  const v = load('envelopes.json').vectors.find(x => x.name.endsWith('format 2, honest'));
  const b = hex(v.envelope_hex);
  const key = hex(v.sender_message_key_hex);
  assert.equal(verifyEnvelopeSignature(ORIGIN, parseEnvelope(b), key), true, 'control');
  assert.equal(verifyEnvelopeSignature('another.example/kt', parseEnvelope(b), key), false, 'another origin');
  for (const i of [0 + 1, 7, 23, 30, b.length - 80, b.length - 65]) {
    const c = new Uint8Array(b); c[i] ^= 1;
    let e; try { e = parseEnvelope(c); } catch { continue; } // a changed length or suite may not parse
    assert.equal(verifyEnvelopeSignature(ORIGIN, e, key), false, `byte ${i} flipped`);
  }
});
