// Byte helpers shared by every module.
import { sha256 as _sha256 } from '@noble/hashes/sha2.js';

export class VerifyError extends Error {
  /** @param {string} step client step name (testdata/vectors/README.md) @param {string} msg */
  constructor(step, msg) { super(`${step}: ${msg}`); this.step = step; }
}
export const te = new TextEncoder();
/** @param {string} h @returns {Uint8Array} */
export function hex(h) {
  if (h.length % 2 || /[^0-9a-f]/i.test(h)) throw new Error('bad hex');
  const b = new Uint8Array(h.length / 2);
  for (let i = 0; i < b.length; i++) b[i] = parseInt(h.substr(2 * i, 2), 16);
  return b;
}
/** @param {Uint8Array} b */
export function toHex(b) { return Array.from(b, x => x.toString(16).padStart(2, '0')).join(''); }
/** @param {...(Uint8Array|string)} parts */
export function concat(...parts) {
  const bs = parts.map(p => typeof p === 'string' ? te.encode(p) : p);
  const out = new Uint8Array(bs.reduce((n, b) => n + b.length, 0));
  let o = 0; for (const b of bs) { out.set(b, o); o += b.length; }
  return out;
}
/** @param {...(Uint8Array|string)} parts */
export function sha256(...parts) { return _sha256(concat(...parts)); }
/** @param {Uint8Array} a @param {Uint8Array} b */
export function eq(a, b) {
  if (a.length !== b.length) return false;
  let d = 0; for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}
export function u16(n) { return new Uint8Array([n >> 8, n & 255]); }
export function u64(n) { const b = new Uint8Array(8); let x = BigInt(n); for (let i = 7; i >= 0; i--) { b[i] = Number(x & 255n); x >>= 8n; } return b; }
export const ZERO32 = new Uint8Array(32);
/** @param {string} s */
export function b64(s) {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4) throw new Error('bad base64');
  const bin = atob(s); const b = new Uint8Array(bin.length);
  for (let i = 0; i < b.length; i++) b[i] = bin.charCodeAt(i);
  // canonical: re-encoding must give the same text
  if (toB64(b) !== s) throw new Error('non-canonical base64');
  return b;
}
export function toB64(b) { let s = ''; for (const x of b) s += String.fromCharCode(x); return btoa(s); }

/** Strict big-endian reader; every overrun throws. */
export class Reader {
  /** @param {Uint8Array} b */
  constructor(b) { this.b = b; this.o = 0; }
  bytes(n) { if (n < 0 || this.o + n > this.b.length) throw new Error('truncated'); const r = this.b.subarray(this.o, this.o + n); this.o += n; return r; }
  u8() { return this.bytes(1)[0]; }
  u16() { const b = this.bytes(2); return (b[0] << 8) | b[1]; }
  u32() { const b = this.bytes(4); return ((b[0] << 24) >>> 0) + (b[1] << 16) + (b[2] << 8) + b[3]; }
  u64() { const b = this.bytes(8); let x = 0n; for (const y of b) x = (x << 8n) | BigInt(y); if (x > BigInt(Number.MAX_SAFE_INTEGER)) return x; return Number(x); }
  done() { if (this.o !== this.b.length) throw new Error('trailing bytes'); }
  get rest() { return this.b.length - this.o; }
}
