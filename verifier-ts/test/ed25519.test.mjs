// Ed25519 edge cases where Go's crypto/ed25519 rules (design.md 4) differ from RFC 8032 strict
// verifiers such as noble's default: small-order keys are accepted, non-canonical R and S are not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ed25519 } from '@noble/curves/ed25519.js';
import { verifyEd25519 } from '../src/encodings.mjs';
import { concat } from '../src/util.mjs';

const identity = new Uint8Array(32); identity[0] = 1;
const msg = new TextEncoder().encode('kt edge');

test('ed25519: honest signature (control)', () => {
  const sk = new Uint8Array(32).fill(7);
  const pk = ed25519.getPublicKey(sk);
  assert.ok(verifyEd25519(pk, msg, ed25519.sign(msg, sk)));
  const bad = ed25519.sign(msg, sk); bad[0] ^= 1;
  assert.ok(!verifyEd25519(pk, msg, bad));
});
test('ed25519: small-order key, R = identity, S = 0 verifies as in Go', () => {
  assert.ok(verifyEd25519(identity, msg, concat(identity, new Uint8Array(32))));
});
test('ed25519: non-canonical R (y = p + 1) is refused', () => {
  const R = new Uint8Array(32).fill(0xff); R[0] = 0xee; R[31] = 0x7f; // 2^255 - 18 = p + 1
  assert.ok(!verifyEd25519(identity, msg, concat(R, new Uint8Array(32))));
});
test('ed25519: S >= L is refused', () => {
  const S = new Uint8Array(32).fill(0xff); S[31] = 0x1f;
  assert.ok(!verifyEd25519(identity, msg, concat(identity, S)));
});
