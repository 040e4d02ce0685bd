// Checks the vectors do not cover, each broken alone on an honest vector (with the control).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './vectors.mjs';
import { hex, toHex, b64, toB64, sha256 } from '../src/util.mjs';
import * as enc from '../src/encodings.mjs';
import { verifyMapProof } from '../src/smt.mjs';
import { verifyLookup } from '../src/verify.mjs';

const lookups = load('lookups.json').vectors;
const honest = lookups.find(v => v.name === 'registered, first contact');
const clone = (x) => JSON.parse(JSON.stringify(x));
function stepOf(v) { try { verifyLookup(v); return 'ok'; } catch (e) { if (!e.step) throw e; return e.step; } }

test('adversarial: control lookup verifies', () => assert.equal(stepOf(honest), 'ok'));
test('adversarial: quorum none refused without the insecure option', () => {
  const v = clone(honest);
  v.params.witness_policy = v.params.witness_policy.replace('quorum wits', 'quorum none');
  assert.equal(stepOf(v), 'params');
});
test('adversarial: an audit policy with quorum none is refused', () => {
  const v = clone(honest); v.params.audit_policy = 'quorum none\n';
  assert.equal(stepOf(v), 'params');
});
// Audit mode (14.1, 12.2 steps 2.2a and 2.5a): the parameters' checks, each broken alone.
const audited = lookups.find(v => v.name === 'audit: statements by both auditors of a 2-of-2 audit policy');
test('adversarial: audit control verifies', () => assert.equal(stepOf(audited), 'ok'));
test('adversarial: a witness line in the audit policy is refused', () => {
  const v = clone(audited); v.params.audit_policy = v.params.audit_policy.replace(/^auditor a2 /m, 'witness a2 ');
  assert.equal(stepOf(v), 'params');
});
test('adversarial: an auditor line in the witness policy is refused', () => {
  const v = clone(audited); v.params.witness_policy = v.params.witness_policy.replace(/^witness w3 /m, 'auditor w3 ');
  assert.equal(stepOf(v), 'params');
});
test('adversarial: an auditor with a witness key is refused', () => {
  const v = clone(audited);
  const wkey = /^witness w1 (\S+)/m.exec(v.params.witness_policy)[1];
  v.params.audit_policy = v.params.audit_policy.replace(/^auditor a2 \S+/m, 'auditor a2 ' + wkey);
  assert.equal(stepOf(v), 'params');
});
test('adversarial: an audit policy naming another log is refused', () => {
  const v = clone(audited);
  // A well-formed log vkey for another key: the log key with its last byte flipped.
  const [, name, , k] = /^([^+]+)\+([^+]+)\+(.+)$/.exec(v.params.log_public_key);
  const kb = b64(k); kb[32] ^= 1;
  const other = `${name}+${toHex(sha256(name, '\n', kb).subarray(0, 4))}+${toB64(kb)}`;
  v.params.audit_policy = v.params.audit_policy.replace(/^log \S+/m, 'log ' + other);
  assert.equal(stepOf(v), 'params');
  v.params.witness_policy = v.params.witness_policy.replace(/^log \S+/m, 'log ' + v.params.log_public_key);
  v.params.audit_policy = v.params.audit_policy.replace(/^log \S+/m, 'log ' + v.params.log_public_key);
  assert.equal(stepOf(v), 'ok'); // control
});
test('adversarial: a negative audit lag bound is refused', () => {
  const v = clone(audited); v.params.max_audit_lag_ms = -1;
  assert.equal(stepOf(v), 'params');
});
test('adversarial: audit lag of a reused trusted epoch (no epoch part)', () => {
  const v = clone(lookups.find(x => x.name.startsWith('registered, epoch part omitted')));
  v.params.audit_policy = audited.params.audit_policy;
  const ts = enc.parseEpochRecord(hex(v.trusted.epoch_record_hex)).timestamp;
  v.now_unix_ms = ts + 30000 + v.params.skew_ms;
  assert.equal(stepOf(v), 'ok'); // control
  v.now_unix_ms += 1;
  assert.equal(stepOf(v), 'audit lag');
});
test('adversarial: the audit lag bound from the parameters', () => {
  const v = clone(audited);
  v.params.max_audit_lag_ms = 5000;
  const ts = enc.parseEpochRecord(hex(v.response.epoch.epoch_record_hex)).timestamp;
  v.now_unix_ms = ts + 5000 + v.params.skew_ms;
  assert.equal(stepOf(v), 'ok');
  v.now_unix_ms += 1;
  assert.equal(stepOf(v), 'audit lag');
});
test('adversarial: a log key whose name is not the origin', () => {
  const v = clone(honest); v.params.origin = 'other.example/kt';
  assert.equal(stepOf(v), 'params');
});
test('adversarial: trusted epoch timestamp beyond now + skew (no epoch part)', () => {
  const v = clone(lookups.find(x => x.name.startsWith('registered, epoch part omitted')));
  assert.equal(stepOf(v), 'ok'); // control
  const ts = enc.parseEpochRecord(hex(v.trusted.epoch_record_hex)).timestamp;
  v.now_unix_ms = ts - v.params.skew_ms - 1;
  assert.equal(stepOf(v), 'freshness');
  v.now_unix_ms = ts - v.params.skew_ms;
  assert.equal(stepOf(v), 'ok');
});
test('adversarial: a lookup answer with a device set but no change record', () => {
  const v = clone(lookups.find(x => x.name === 'not registered (absence proof)'));
  assert.equal(stepOf(v), 'ok');
  v.response.device_set_hex = honest.response.device_set_hex;
  assert.equal(stepOf(v), 'parse');
});

const map = load('map.json').vectors.find(v => v.valid && v.value_hex !== '');
test('adversarial: map proof with a listed zero sibling is refused', () => {
  const p = hex(map.proof_hex);
  const d = (p[0] << 8) | p[1];
  assert.ok(d > 0);
  verifyMapProof(hex(map.root_hex), hex(map.key_hex), hex(map.value_hex), p); // control
  // find the first listed sibling and zero it
  const bm = 2 + ((d + 7) >> 3);
  const q = p.slice(); q.fill(0, bm, bm + 32);
  assert.throws(() => verifyMapProof(hex(map.root_hex), hex(map.key_hex), hex(map.value_hex), q), /non-canonical|root/);
});

const encs = load('encodings.json').vectors;
const rec2 = hex(encs.find(v => v.name.startsWith('change record: version 2')).encoding_hex);
const ds1 = hex(encs.find(v => v.name.startsWith('device set: one X25519')).encoding_hex);
test('adversarial: change record rules', () => {
  enc.parseChangeRecord(rec2); // control
  const n = rec2[107];
  assert.equal(n, 2);
  let b = rec2.slice(); b.fill(0, 34, 42); assert.throws(() => enc.parseChangeRecord(b), /version 0/);
  b = rec2.slice(); b[106] = 5; assert.throws(() => enc.parseChangeRecord(b), /kind/);
  b = rec2.slice(); b[107] = 66; assert.throws(() => enc.parseChangeRecord(b));
  // swap the two authorizers: no longer strictly increasing
  b = rec2.slice(); b.set(rec2.subarray(141, 174), 108); b.set(rec2.subarray(108, 141), 141);
  assert.throws(() => enc.parseChangeRecord(b), /increasing|account/);
  b = rec2.slice(); b[108] = 3; assert.throws(() => enc.parseChangeRecord(b), /role/);
});
test('adversarial: device set rules', () => {
  enc.parseDeviceSet(ds1); // control
  let b = ds1.slice(); b[18 + 16 + 1] = 0x21; assert.throws(() => enc.parseDeviceSet(b), /suite/); // KEM 0x0021
  b = ds1.slice(); b[18 + 16 + 7] = 33; assert.throws(() => enc.parseDeviceSet(b), /key length/);
  const flag = 18 + 16 + 8 + 32 + 32 + 8;
  b = ds1.slice(); b[flag] = 2; assert.throws(() => enc.parseDeviceSet(b), /flag/);
  // the account key equal to the device's signing key
  b = ds1.slice(); b.set(ds1.subarray(18 + 16 + 8 + 32, 18 + 16 + 8 + 64), flag + 1);
  assert.throws(() => enc.parseDeviceSet(b), /distinct/);
  b = ds1.slice(); b[17] = 65; assert.throws(() => enc.parseDeviceSet(b), /too many/);
});
test('adversarial: change statement with an origin over 65535 bytes is refused', () => {
  assert.throws(() => enc.changeStatement('o'.repeat(65536), enc.parseChangeRecord(rec2)), /origin/);
  assert.equal(toHex(enc.changeStatement('x', enc.parseChangeRecord(rec2))).slice(0, 30), toHex(new TextEncoder().encode('kt/v1/change\0\0\x01x')).slice(0, 30));
});
