// design.md 4.1: RFC 9381 ECVRF-EDWARDS25519-SHA512-ELL2 (suite 0x04), verification only.
import { ed25519, ed25519_hasher } from '@noble/curves/ed25519.js';
import { sha512 } from '@noble/hashes/sha2.js';
import { concat, b64 } from './util.mjs';

const Point = ed25519.Point;
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const SUITE = new Uint8Array([0x04]);
const DST = concat('ECVRF_edwards25519_XMD:SHA-512_ELL2_NU_', SUITE);

function le(b) { let x = 0n; for (let i = b.length - 1; i >= 0; i--) x = (x << 8n) | BigInt(b[i]); return x; }

/** @param {string} text kt-vrf-public:<base64> (4.1) */
export function parseVRFPublicKey(text) {
  const p = 'kt-vrf-public:';
  if (!text.startsWith(p)) throw new Error('VRF key: missing kt-vrf-public: prefix');
  return validateVRFKey(b64(text.slice(p.length)));
}

/** RFC 9381 5.4.5 ECVRF_validate_key: 32 bytes, decodes and is not of small order. Returns k. */
export function validateVRFKey(k) {
  if (k.length !== 32) throw new Error('VRF key: not 32 bytes');
  let Y;
  try { Y = Point.fromBytes(k); } catch { throw new Error('VRF key: not a point'); }
  if (Y.isSmallOrder()) throw new Error('VRF key: small order');
  return k;
}

/** RFC 9381 5.3; returns beta (64 bytes) or null. */
export function vrfVerify(pk, alpha, pi) {
  if (pi.length !== 80) return null;
  let Y, Gamma;
  try { Y = Point.fromBytes(pk); Gamma = Point.fromBytes(pi.subarray(0, 32)); } catch { return null; }
  if (Y.isSmallOrder()) return null;
  const c = le(pi.subarray(32, 48));
  const s = le(pi.subarray(48, 80));
  if (s >= L) return null;
  const H = ed25519_hasher.encodeToCurve(concat(pk, alpha), { DST });
  const cY = c === 0n ? Point.ZERO : Y.multiplyUnsafe(c);
  const U = (s === 0n ? Point.ZERO : Point.BASE.multiply(s)).subtract(cY);
  const sH = s === 0n ? Point.ZERO : H.multiplyUnsafe(s);
  const V = sH.subtract(c === 0n ? Point.ZERO : Gamma.multiplyUnsafe(c));
  const h = sha512(concat(SUITE, new Uint8Array([2]), pk, H.toBytes(), Gamma.toBytes(), U.toBytes(), V.toBytes(), new Uint8Array([0])));
  if (le(h.subarray(0, 16)) !== c) return null;
  return sha512(concat(SUITE, new Uint8Array([3]), Gamma.clearCofactor().toBytes(), new Uint8Array([0])));
}

/** 4.1 */
export function vrfInput(canonical) { return concat('kt/v1/handle', new Uint8Array([0]), canonical); }
