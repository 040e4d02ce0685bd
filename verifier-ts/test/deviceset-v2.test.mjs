// design.md 5.3: device set format 0x02 (a message-signing key per device),
// checked here beyond the vectors: the parse, the distinctness of every key,
// the authorizers (message keys are not authorizers), and malformed sets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './vectors.mjs';
import { hex, toHex } from '../src/util.mjs';
import * as enc from '../src/encodings.mjs';

const vectors = load('encodings.json').vectors;
const find = (prefix) => {
  const v = vectors.find(x => x.name.startsWith(prefix));
  assert.ok(v, `vector ${prefix}`);
  return hex(v.encoding_hex);
};
const v2 = () => find('device set: format 0x02, X25519 and MLKEM768-X25519');
const v1 = () => find('device set: X25519 and MLKEM768-X25519 devices, no account key');

// Offsets of the keys of device i (5.3): id 16, suite 6, length 2, HPKE key, signing 32, message 32, created 8.
function offsets(ds) {
  const out = [];
  let o = 18;
  for (const d of ds.devices) {
    const sig = o + 16 + 6 + 2 + d.hpkePublicKey.length;
    out.push({ sig, msg: sig + 32 });
    o = sig + 32 + 32 + 8;
  }
  return out;
}

test('format 0x02: parses, message keys distinct from signing keys, same authorizers as without them', () => {
  const b = v2();
  const ds = enc.parseDeviceSet(b);
  assert.equal(ds.format, 2);
  assert.equal(ds.devices.length, 2);
  for (const d of ds.devices) {
    assert.equal(d.messageKey.length, 32);
    assert.notEqual(toHex(d.messageKey), toHex(d.signingKey));
  }
  const o = offsets(ds);
  assert.equal(toHex(b.subarray(o[1].msg, o[1].msg + 32)), toHex(ds.devices[1].messageKey));
  // Authorizers: the devices' signing keys and the account key only.
  const auths = enc.setAuthorizers(ds);
  assert.equal(auths.length, 3);
  const old = enc.parseDeviceSet(v1());
  assert.equal(old.format, 1);
  assert.equal(old.devices[0].messageKey, null);
  assert.deepEqual(enc.setAuthorizers(old).map(a => toHex(a.digest)), auths.filter(a => a.role === 1).map(a => toHex(a.digest)));
});

test('format 0x02: a device without a message key yet (32 zero bytes) is valid', () => {
  const ds = enc.parseDeviceSet(find('device set: format 0x02, the second device without'));
  assert.equal(ds.devices.filter(d => d.messageKey.every(x => x === 0)).length, 1);
});

test('format 0x02: malformed sets are refused', () => {
  const b = v2();
  const ds = enc.parseDeviceSet(b);
  const o = offsets(ds);
  const edit = (f) => { const c = new Uint8Array(b); f(c); return c; };
  const cases = {
    'message key = own signing key': edit(c => c.set(c.subarray(o[0].sig, o[0].sig + 32), o[0].msg)),
    'message key = other device signing key': edit(c => c.set(c.subarray(o[1].sig, o[1].sig + 32), o[0].msg)),
    'two devices share a message key': edit(c => c.set(c.subarray(o[0].msg, o[0].msg + 32), o[1].msg)),
    'message key = account key': edit(c => c.set(c.subarray(c.length - 96, c.length - 64), o[1].msg)),
    'format 0x03': edit(c => { c[0] = 3; }),
    'format 0x02 read as 0x01': edit(c => { c[0] = 1; }),
    'truncated in a message key': b.subarray(0, o[1].msg + 5),
    'trailing byte': new Uint8Array([...b, 0]),
  };
  for (const [name, x] of Object.entries(cases)) assert.throws(() => enc.parseDeviceSet(x), undefined, name);
  // Control: the unedited set parses.
  assert.doesNotThrow(() => enc.parseDeviceSet(edit(() => {})));
});
