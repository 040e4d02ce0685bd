// design.md 9, 9.1: C2SP signed notes, checkpoints, tlog-cosignature/v1, witness policy;
// RFC 9162 inclusion and consistency proofs.
import { sha256, concat, eq, b64, te, u64, toB64 } from './util.mjs';
import { verifyEd25519 } from './encodings.mjs';

/** A note verifier key: name+hash+base64(type||key). type 0x01 Ed25519 note key, 0x04 cosignature/v1. */
export function parseVkey(text, wantType) {
  const m = /^([^+]+)\+([^+]+)\+(.+)$/s.exec(text);
  if (!m) throw new Error('vkey: want name+hash+key');
  const [, name, hash, k] = m;
  if (!name || /[\s+]/.test(name)) throw new Error('vkey: bad name');
  if (!/^[0-9a-f]{8}$/.test(hash)) throw new Error('vkey: bad hash');
  const kb = b64(k);
  if (kb.length !== 33 || kb[0] !== wantType) throw new Error(`vkey: want type 0x0${wantType} and a 32-byte key`);
  const id = sha256(name, '\n', kb).subarray(0, 4);
  if (Array.from(id, x => x.toString(16).padStart(2, '0')).join('') !== hash) throw new Error('vkey: hash does not match');
  return { name, id, key: kb.subarray(1), type: wantType };
}

/** Split a signed note into body and signature lines (C2SP signed-note). */
export function parseNote(text) {
  if (!text.endsWith('\n')) throw new Error('note: no final newline');
  const i = text.lastIndexOf('\n\n');
  if (i < 0) throw new Error('note: no signatures');
  const body = text.slice(0, i + 1);
  const sigs = [];
  for (const line of text.slice(i + 2, -1).split('\n')) {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m) throw new Error('note: malformed signature line');
    const blob = b64(m[2]);
    if (blob.length < 5) throw new Error('note: short signature');
    sigs.push({ name: m[1], id: blob.subarray(0, 4), sig: blob.subarray(4) });
  }
  if (sigs.length === 0) throw new Error('note: no signatures');
  return { body, sigs };
}

/** C2SP tlog-checkpoint body, no extension lines (9). */
export function parseCheckpointBody(body, origin) {
  if (/[\u0000-\u0009\u000b-\u001f\u007f]/.test(body)) throw new Error('note: control character');
  const lines = body.split('\n');
  if (lines.length !== 4 || lines[3] !== '') throw new Error('checkpoint: want origin, size, root (no extension lines)');
  if (lines[0] !== origin) throw new Error('checkpoint: wrong origin');
  if (!/^(0|[1-9][0-9]*)$/.test(lines[1])) throw new Error('checkpoint: bad size');
  const size = Number(lines[1]);
  if (!Number.isSafeInteger(size)) throw new Error('checkpoint: size too large');
  const root = b64(lines[2]);
  if (root.length !== 32) throw new Error('checkpoint: root not 32 bytes');
  return { origin, size, root };
}

/** Log signature check: a signature line of the log key must exist and verify. */
export function verifyLogSignature(note, logKey) {
  let found = false;
  for (const s of note.sigs) {
    if (s.name === logKey.name && eq(s.id, logKey.id)) {
      if (s.sig.length !== 64 || !verifyEd25519(logKey.key, te.encode(note.body), s.sig)) return false;
      found = true;
    }
  }
  return found;
}

export class BadCosignatureError extends Error {}
/**
 * Valid cosignature timestamps (seconds) by witness name; unknown keys ignored; a signature line
 * of a policy key that does not verify throws. Cosignatures dated after maxTimeSec, or (audit
 * statements, 12.2 step 2.2a) before minTimeMs, are not counted.
 */
export function cosignatureTimes(note, witnesses, maxTimeSec, minTimeMs) {
  const times = new Map();
  for (const w of witnesses) {
    for (const s of note.sigs) {
      if (s.name !== w.key.name || !eq(s.id, w.key.id)) continue;
      if (s.sig.length !== 72) throw new BadCosignatureError(`cosignature by ${w.name} of wrong length`);
      let t = 0n; for (const x of s.sig.subarray(0, 8)) t = (t << 8n) | BigInt(x);
      const msg = concat(`cosignature/v1\ntime ${t}\n`, note.body);
      // SPEC ambiguity (12.2 step 2.2): the Go client refuses the whole note when a known
      // witness key's cosignature does not verify (note.Open semantics), rather than not counting it.
      if (!verifyEd25519(w.key.key, msg, s.sig.subarray(8))) throw new BadCosignatureError(`invalid cosignature by ${w.name}`);
      if (maxTimeSec !== undefined && t > BigInt(maxTimeSec)) continue;
      if (minTimeMs !== undefined && Number(t) * 1000 < minTimeMs) continue;
      times.set(w.name, Number(t));
    }
  }
  return times;
}

/**
 * 9.1 witness policy, Sigsum format with C2SP vkeys. member 'auditor' parses an audit policy
 * (14.1): the same grammar with "auditor NAME VKEY [URL]" lines in place of "witness" lines
 * (each kind of line is refused in the other kind of policy); the auditors are in p.witnesses.
 */
export function parsePolicy(text, member = 'witness') {
  const p = { log: null, witnesses: new Map(), groups: new Map(), quorum: undefined };
  const defined = (n) => p.witnesses.has(n) || p.groups.has(n);
  for (let line of text.split('\n')) {
    line = line.replace(/#.*$/, '').trim();
    if (!line) continue;
    const f = line.split(/\s+/);
    switch (f[0]) {
      case 'log':
        if (f.length < 2 || f.length > 3 || p.log) throw new Error('policy: bad log line');
        p.log = parseVkey(f[1], 1); break;
      case 'witness': case 'auditor': {
        if (f[0] !== member) throw new Error(`policy: ${f[0]} line in a${member === 'auditor' ? 'n audit' : ' witness'} policy`);
        if (f.length < 3 || f.length > 4 || defined(f[1])) throw new Error(`policy: bad ${member} line`);
        const key = parseVkey(f[2], 4);
        for (const w of p.witnesses.values()) if (eq(w.key.key, key.key)) throw new Error(`policy: one key for two ${member}s`);
        p.witnesses.set(f[1], { name: f[1], key }); break;
      }
      case 'group': {
        if (f.length < 4 || defined(f[1])) throw new Error('policy: bad group line');
        const members = f.slice(3);
        for (const m of members) if (!defined(m)) throw new Error('policy: undefined member ' + m);
        if (new Set(members).size !== members.length) throw new Error('policy: duplicate member');
        let k;
        if (f[2] === 'any') k = 1; else if (f[2] === 'all') k = members.length;
        else if (/^[1-9][0-9]*$/.test(f[2])) k = Number(f[2]); else throw new Error('policy: bad threshold');
        if (k < 1 || k > members.length) throw new Error('policy: threshold out of range');
        p.groups.set(f[1], { k, members }); break;
      }
      case 'quorum':
        if (f.length !== 2 || p.quorum !== undefined) throw new Error('policy: exactly one quorum line');
        if (f[1] !== 'none' && !defined(f[1])) throw new Error('policy: undefined quorum');
        p.quorum = f[1] === 'none' ? null : f[1]; break;
      default: throw new Error('policy: unknown statement ' + f[0]);
    }
  }
  if (p.quorum === undefined) throw new Error('policy: no quorum line');
  return p;
}
/** Is the quorum satisfied by the set of witness names? */
export function satisfied(p, name, have) {
  if (p.witnesses.has(name)) return have.has(name);
  const g = p.groups.get(name);
  return g.members.filter(m => satisfied(p, m, have)).length >= g.k;
}
/**
 * The witness quorum time (design.md 12.2 step 2.5): the latest time T
 * such that the cosignatures dated T or later satisfy the quorum on their
 * own (for k of n witnesses, the k-th latest timestamp), or null.
 */
export function quorumTime(p, times) {
  if (p.quorum === null) return null;
  const sorted = [...times.entries()].sort((a, b) => b[1] - a[1]);
  const have = new Set();
  for (const [n, t] of sorted) { have.add(n); if (satisfied(p, p.quorum, have)) return t; }
  return null;
}

// RFC 9162 2.1.3.2 and 2.1.4.2
const nodeHash = (l, r) => sha256(new Uint8Array([1]), l, r);
export function verifyInclusion(index, size, leaf, proof, root) {
  if (index >= size) return false;
  let fn = index, sn = size - 1, r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else r = nodeHash(r, p);
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 && eq(r, root);
}
export function verifyConsistency(m, n, oldRoot, newRoot, proof) {
  if (m > n) return false;
  if (m === n) return proof.length === 0 && eq(oldRoot, newRoot);
  if (m === 0) return proof.length === 0;
  if (proof.length === 0) return false;
  let p = proof;
  if ((m & (m - 1)) === 0) p = [oldRoot, ...proof];
  let fn = m - 1, sn = n - 1;
  while (fn % 2 === 1) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
  let fr = p[0], sr = p[0];
  for (const c of p.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr); sr = nodeHash(c, sr);
      if (fn % 2 === 0) while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else sr = nodeHash(sr, c);
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 && eq(fr, oldRoot) && eq(sr, newRoot);
}
export { toB64, u64 };
