import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './vectors.mjs';
import { hex, toHex } from '../src/util.mjs';
import { normalizeHandle } from '../src/handle.mjs';
import { vrfInput, vrfVerify, parseVRFPublicKey } from '../src/vrf.mjs';
import { verifyMapProof } from '../src/smt.mjs';
import * as enc from '../src/encodings.mjs';

const ORIGIN = load('encodings.json').origin;

for (const v of load('handles.json').vectors) {
  test(`handles: ${JSON.stringify(v.input)}`, () => {
    if (v.error) { assert.throws(() => normalizeHandle(v.input)); return; }
    const c = normalizeHandle(v.input);
    assert.equal(c, v.canonical);
    assert.equal(toHex(vrfInput(c)), v.vrf_input_hex);
    assert.equal(normalizeHandle(c), c, 'idempotent');
  });
}

for (const v of load('vrf.json').vectors) {
  test(`vrf: ${v.name ?? v.handle}`, () => {
    let beta = null;
    try { beta = vrfVerify(parseVRFPublicKey(v.public_key), hex(v.alpha_hex), hex(v.proof_hex)); } catch { beta = null; }
    assert.equal(beta !== null, v.valid);
    if (v.valid) assert.equal(toHex(beta.subarray(0, 32)), v.index_hex);
  });
}

for (const v of load('map.json').vectors) {
  test(`map: ${v.name}`, () => {
    let ok = true;
    try { verifyMapProof(hex(v.root_hex), hex(v.key_hex), v.value_hex === '' ? null : hex(v.value_hex), hex(v.proof_hex)); } catch { ok = false; }
    assert.equal(ok, v.valid);
  });
}

for (const v of load('commitments.json').vectors) {
  test(`commitments: ${v.name}`, () => {
    const opening = hex(v.opening_hex), index = hex(v.index_hex), value = hex(v.value_hex);
    if (v.commitment_hex) assert.equal(toHex(enc.commit(opening, index, v.version, value)), v.commitment_hex);
    if (v.change_record_hex) {
      const rec = enc.parseChangeRecord(hex(v.change_record_hex));
      let err = null;
      try { enc.openCommitment(rec, opening, value); } catch (e) { err = e; }
      assert.equal(err === null, v.open_ok);
      if (v.error === 'ErrCommitment') assert.equal(err.kind, 'commitment');
      if (v.rule) assert.equal(err.kind, 'R7');
    }
  });
}

function auths(a) { return a.map(x => ({ role: x.role, digest_hex: toHex(x.digest) })); }
for (const v of load('encodings.json').vectors) {
  test(`encodings: ${v.name}`, () => {
    const b = hex(v.encoding_hex);
    const parse = { device_set: enc.parseDeviceSet, change_record: enc.parseChangeRecord, epoch_record: enc.parseEpochRecord,
      rotation_record: enc.parseRotationRecord, move_entry: enc.parseMoveEntry, entry: (x) => enc.parseEntry(x).entry }[v.type];
    if (v.error) {
      if (v.type === 'entry') {
        assert.throws(() => enc.parseEntry(b));
        for (const p of [enc.parseChangeRecord, enc.parseEpochRecord, enc.parseRotationRecord, enc.parseMoveEntry]) assert.throws(() => p(b));
      }
      else assert.throws(() => parse(b));
      return;
    }
    const got = parse(b);
    if (v.leaf_hash_hex) assert.equal(toHex(enc.leafHash(b)), v.leaf_hash_hex);
    if (v.type === 'device_set') {
      const w = v.device_set;
      assert.equal(toHex(got.accountId), w.account_id_hex);
      assert.equal(got.format, w.format ?? 1);
      assert.deepEqual(got.devices.map(d => ({ id_hex: toHex(d.id), kem: d.kem, kdf: d.kdf, aead: d.aead, hpke_public_key_hex: toHex(d.hpkePublicKey), signing_key_hex: toHex(d.signingKey),
        ...(d.messageKey ? { message_key_hex: toHex(d.messageKey) } : {}), created_unix: d.created })), w.devices ?? []);
      assert.equal(got.accountKey ? toHex(got.accountKey) : undefined, w.account_key_hex || undefined);
      if (v.account_statement_hex) {
        assert.equal(toHex(enc.accountStatement(ORIGIN, hex(v.account_index_hex), v.account_version, got)), v.account_statement_hex);
        assert.equal(enc.verifyAccount(ORIGIN, hex(v.account_index_hex), v.account_version, got), v.account_valid);
      }
    } else if (v.type === 'change_record') {
      const w = v.change_record;
      assert.deepEqual({ index_hex: toHex(got.index), version: got.version, commitment_hex: toHex(got.commitment), prev_hex: toHex(got.prev), kind: got.kind, authorizers: auths(got.authorizers), signer_hex: toHex(got.signer), signature_hex: toHex(got.signature) },
        { ...w, authorizers: w.authorizers ?? [] });
      assert.equal(toHex(enc.changeStatement(ORIGIN, got)), v.change_statement_hex);
      assert.equal(enc.verifyChangeSignature(ORIGIN, got), v.signature_valid);
    } else if (v.type === 'rotation_record') {
      assert.equal(enc.parseEntry(b).type, 'rotation_record');
      const w = v.rotation_record;
      assert.deepEqual({ key_kind: got.kind, sequence: got.sequence, old_key_hex: toHex(got.oldKey), new_key_hex: toHex(got.newKey), old_proof_hex: toHex(got.oldProof), new_proof_hex: toHex(got.newProof) }, w);
      assert.equal(toHex(enc.rotationStatement(ORIGIN, got)), v.rotation_statement_hex);
      assert.equal(enc.verifyRotationProofs(ORIGIN, got), v.proofs_valid);
    } else if (v.type === 'move_entry') {
      assert.equal(enc.parseEntry(b).type, 'move_entry');
      assert.deepEqual({ rotation_sequence: got.sequence, old_index_hex: toHex(got.oldIndex), new_index_hex: toHex(got.newIndex), leaf_hex: toHex(got.leaf) }, v.move_entry);
    } else {
      const w = v.epoch_record;
      assert.deepEqual({ epoch: got.epoch, timestamp_unix_ms: got.timestamp, log_size: got.logSize, map_root_hex: toHex(got.mapRoot), map_size: got.mapSize }, w);
    }
  });
}
