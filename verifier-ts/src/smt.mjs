// design.md 8: sparse Merkle map proofs.
import { Reader, sha256, eq, ZERO32 } from './util.mjs';

export class MapProofError extends Error {}
function bit(k, i) { return (k[i >> 3] >> (7 - (i & 7))) & 1; }
const H0 = (k, v) => sha256(new Uint8Array([0]), k, v);
const H1 = (l, r) => sha256(new Uint8Array([1]), l, r);

/**
 * 8.2. value null = absence claim. Throws MapProofError on any failure.
 * @param {Uint8Array} root @param {Uint8Array} key @param {Uint8Array|null} value @param {Uint8Array} proof
 */
export function verifyMapProof(root, key, value, proof) {
  verifyParsedMapProof(root, key, value, parseMapProof(proof));
}
/** 8.2 step 1 (strict parse and canonicality). @param {Uint8Array} proof */
export function parseMapProof(proof) {
  const r = new Reader(proof);
  let d, bitmap, sibs = [], term, ok, ov;
  try {
    d = r.u16();
    if (d > 256) throw new Error('depth > 256');
    bitmap = r.bytes((d + 7) >> 3);
    for (let i = 0; i < d; i++) sibs.push(bit(bitmap, i) ? r.bytes(32) : null);
    term = r.u8();
    if (term > 2) throw new Error('terminal');
    if (term === 2) { ok = r.bytes(32); ov = r.bytes(32); }
    r.done();
  } catch (e) { throw new MapProofError('malformed map proof: ' + e.message); }
  return { d, bitmap, sibs, term, ok, ov };
}
// Non-canonical proofs parse (step 1 names them apart from malformed ones) and fail verification:
// a lookup reports them at the "map proof" step, as the Go client does.
export function verifyParsedMapProof(root, key, value, { d, bitmap, sibs, term, ok, ov }) {
  for (let i = d; i < bitmap.length * 8; i++) if (bit(bitmap, i)) throw new MapProofError('non-canonical: bitmap bit beyond depth');
  for (const s of sibs) if (s && eq(s, ZERO32)) throw new MapProofError('non-canonical: zero sibling listed');
  if (d > 0 && !sibs[d - 1]) throw new MapProofError('non-canonical: last sibling empty');
  let h;
  if (term === 0) { if (!value) throw new MapProofError('wrong terminal'); h = H0(key, value); }
  else if (term === 1) { if (value) throw new MapProofError('wrong terminal'); h = ZERO32; }
  else {
    if (value) throw new MapProofError('wrong terminal');
    if (eq(ok, key)) throw new MapProofError('wrong terminal: other key equals key');
    for (let i = 0; i < d; i++) if (bit(ok, i) !== bit(key, i)) throw new MapProofError('wrong terminal: other key off path');
    h = H0(ok, ov);
  }
  for (let i = d - 1; i >= 0; i--) {
    const s = sibs[i] || ZERO32;
    h = bit(key, i) ? H1(s, h) : H1(h, s);
  }
  if (!eq(h, root)) throw new MapProofError('root mismatch');
}
