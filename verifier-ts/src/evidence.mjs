// design.md 15 (kt-evidence/v1 forks) and 15.1 (kt-evidence/v2 rule violations), verified offline.
import { b64, eq } from './util.mjs';
import * as enc from './encodings.mjs';
import * as cp from './checkpoint.mjs';
import { parseMapProof, verifyParsedMapProof } from './smt.mjs';
import { checkChange } from './verify.mjs';

export class EvidenceError extends Error {
  /** @param {'malformed'|'signature'|'proof'|'not evidence'} kind */
  constructor(kind, msg) { super(`evidence: ${kind}: ${msg}`); this.kind = kind; }
}
const E = (k, m) => { throw new EvidenceError(k, m); };
import { sha256 } from './util.mjs';
function sha256n(l, r) { return sha256(new Uint8Array([1]), l, r); }
const MAX_NOTE = 64 * 1024;

function openCheckpoint(text, origin, logKey) {
  if (text.length > MAX_NOTE) E('malformed', 'note too large');
  let note;
  try { note = cp.parseNote(text); } catch (e) { E('malformed', e.message); }
  // the signature first: a changed body is a signature failure even when it no longer parses (as in Go)
  if (!cp.verifyLogSignature(note, logKey)) E('signature', 'checkpoint not signed by the log key');
  try { return cp.parseCheckpointBody(note.body, origin); } catch (e) { E('malformed', e.message); }
}
function dec(s) { try { return b64(s); } catch (e) { E('malformed', e.message); } }
const td = new TextDecoder('utf-8', { fatal: true });
function decNote(s) { try { return td.decode(dec(s)); } catch (e) { if (e instanceof EvidenceError) throw e; E('malformed', 'note not UTF-8'); } }

/**
 * @param {string} origin @param {string} logVkey @param {Uint8Array} recoveryKey @param {string} bundle
 * @returns {{kind:string, needsReplay:boolean}}
 */
export function verifyEvidence(origin, logVkey, recoveryKey, bundle) {
  const logKey = cp.parseVkey(logVkey, 1);
  if (!bundle.endsWith('\n')) E('malformed', 'no final newline');
  const lines = bundle.slice(0, -1).split('\n');
  if (lines[0] === 'kt-evidence/v1') return v1(origin, logKey, lines.slice(1));
  if (lines[0] === 'kt-evidence/v2') return v2(origin, logKey, recoveryKey, lines.slice(1));
  E('malformed', 'unknown header');
}

function v1(origin, logKey, lines) {
  if (lines.length < 2 || !lines[0].startsWith('checkpoint ') || !lines[1].startsWith('checkpoint ')) E('malformed', 'want two checkpoint lines');
  const proof = lines.slice(2).map(l => { if (!l.startsWith('proof ')) E('malformed', 'unexpected line'); const h = dec(l.slice(6)); if (h.length !== 32) E('malformed', 'proof hash not 32 bytes'); return h; });
  if (proof.length > 129) E('malformed', 'too many proof lines');
  const A = openCheckpoint(decNote(lines[0].slice(11)), origin, logKey);
  const B = openCheckpoint(decNote(lines[1].slice(11)), origin, logKey);
  if (A.size > B.size) E('malformed', 'A larger than B');
  if (A.size === B.size) {
    if (proof.length) E('malformed', 'proof lines with equal sizes');
    if (eq(A.root, B.root)) E('not evidence', 'equal checkpoints');
    for (let i = 0; i < 32; i++) if (A.root[i] !== B.root[i]) { if (A.root[i] > B.root[i]) E('malformed', 'not in canonical order'); break; }
    return { kind: 'fork', needsReplay: false };
  }
  if (A.size === 0) E('malformed', 'empty tree');
  if (proof.length === 0) E('proof', 'no proof');
  // RFC 9162 2.1.4.2 without prepending the old root (the proof carries B's subtree hash)
  let fn = A.size - 1, sn = B.size - 1;
  while (fn % 2 === 1) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
  let fr = proof[0], sr = proof[0];
  for (const c of proof.slice(1)) {
    if (sn === 0) E('proof', 'proof too long');
    if (fn % 2 === 1 || fn === sn) {
      fr = sha256n(c, fr); sr = sha256n(c, sr);
      if (fn % 2 === 0) while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else sr = sha256n(sr, c);
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  if (sn !== 0 || !eq(sr, B.root)) E('proof', 'proof does not end at B\'s root');
  if (eq(fr, A.root)) E('not evidence', 'the checkpoints are consistent');
  return { kind: 'fork', needsReplay: false };
}

function v2(origin, logKey, recoveryKey, lines) {
  const m = /^kind (records|map-regression|version-conflict|map-root)$/.exec(lines[0] ?? '');
  if (!m) E('malformed', 'bad kind line');
  const kind = m[1];
  if (!(lines[1] ?? '').startsWith('checkpoint ')) E('malformed', 'want a checkpoint line');
  const C = openCheckpoint(decNote(lines[1].slice(11)), origin, logKey);
  /** @type {{index:number, bytes:Uint8Array, inclusion:Uint8Array[], mapProof?:any, value?:Uint8Array|null, hasValue?:boolean}[]} */
  const entries = [];
  for (const l of lines.slice(2)) {
    const cur = entries[entries.length - 1];
    let mm;
    if ((mm = /^entry (0|[1-9][0-9]*) (\S+)$/.exec(l))) {
      const index = Number(mm[1]);
      if (cur && index <= cur.index) E('malformed', 'entries not in increasing index order');
      entries.push({ index, bytes: dec(mm[2]), inclusion: [] });
    } else if ((mm = /^inclusion (\S+)$/.exec(l))) {
      if (!cur || cur.mapProof) E('malformed', 'inclusion out of place');
      const h = dec(mm[1]); if (h.length !== 32) E('malformed', 'hash not 32 bytes');
      cur.inclusion.push(h); if (cur.inclusion.length > 129) E('malformed', 'too many inclusion lines');
    } else if ((mm = /^map-proof (\S+)$/.exec(l))) {
      if (!cur || cur.mapProof || cur.bytes[1] !== 2) E('malformed', 'map proof out of place');
      try { cur.mapProof = parseMapProof(dec(mm[1])); } catch (e) { E('malformed', e.message); }
    } else if ((mm = /^value (\S+)$/.exec(l))) {
      if (!cur || !cur.mapProof || cur.hasValue) E('malformed', 'value out of place');
      cur.hasValue = true; cur.value = mm[1] === 'absent' ? null : dec(mm[1]);
    } else E('malformed', 'unexpected line');
  }
  // parse entries and check inclusion and map proofs
  for (const e of entries) {
    try { e.parsed = e.bytes[1] === 2 ? enc.parseEpochRecord(e.bytes) : enc.parseChangeRecord(e.bytes); } catch (err) { E('malformed', err.message); }
    if (e.mapProof && !e.hasValue) E('malformed', 'map proof without value');
    if (e.value) { try { e.valueRec = enc.parseChangeRecord(e.value); } catch (err) { E('malformed', 'value: ' + err.message); } }
    if (!cp.verifyInclusion(e.index, C.size, enc.leafHash(e.bytes), e.inclusion, C.root)) E('proof', `entry ${e.index}: inclusion proof fails`);
  }
  const mapKey = (e) => e.valueRec ? e.valueRec.index : null;
  const checkMap = (e, key) => {
    try { verifyParsedMapProof(e.parsed.mapRoot, key, e.value ? enc.leafHash(e.value) : null, e.mapProof); } catch (err) { E('proof', 'map proof: ' + err.message); }
  };
  const changes = entries.filter(e => e.bytes[1] === 1), epochs = entries.filter(e => e.bytes[1] === 2);
  switch (kind) {
    case 'records': {
      if (epochs.length || changes.length < 1 || changes.length > 2) E('malformed', 'records: one or two change records');
      const [A, B] = changes.map(e => e.parsed);
      if (!B) {
        if (A.version === 1) { if (checkChange(origin, recoveryKey, null, A)) return { kind, needsReplay: false }; }
        else {
          if (!enc.verifyChangeSignature(origin, A)) return { kind, needsReplay: false };
          if (A.kind === 1 && !A.authorizers.some(a => eq(a.digest, sha256(A.signer)))) return { kind, needsReplay: false };
          if (A.kind === 4 && !eq(A.signer, recoveryKey)) return { kind, needsReplay: false };
        }
        E('not evidence', 'the record breaks no rule on its own');
      }
      if (!eq(A.index, B.index)) E('malformed', 'records of two indices');
      if (B.version <= A.version) return { kind, needsReplay: false };
      if (B.version === A.version + 1 && (!eq(B.prev, enc.leafHash(A.bytes)) || checkChange(origin, recoveryKey, A, B))) return { kind, needsReplay: false };
      E('not evidence', 'the records follow the rules');
    }
    case 'map-regression': {
      if (changes.length || epochs.length !== 2 || !epochs.every(e => e.mapProof)) E('malformed', 'map-regression: two epoch records with map proofs');
      const [e1, e2] = epochs;
      if (!e1.valueRec) E('not evidence', 'E1 holds no record');
      const x = e1.valueRec.index;
      checkMap(e1, x); checkMap(e2, x);
      const r1 = e1.valueRec, r2 = e2.valueRec;
      if (!r2 || !eq(r2.index, x) || r2.version < r1.version || (r2.version === r1.version && !eq(enc.leafHash(e2.value), enc.leafHash(e1.value)))) return { kind, needsReplay: false };
      E('not evidence', 'the later map holds the same or a later record');
    }
    case 'version-conflict': {
      if (epochs.length !== 1 || !epochs[0].mapProof || changes.length !== 1) E('malformed', 'version-conflict: one epoch record with a map proof and one change record');
      const e = epochs[0], R2 = changes[0].parsed;
      if (!e.valueRec) E('not evidence', 'the map holds no record');
      checkMap(e, e.valueRec.index);
      if (eq(R2.index, e.valueRec.index) && R2.version === e.valueRec.version && !eq(enc.leafHash(R2.bytes), enc.leafHash(e.value))) return { kind, needsReplay: false };
      E('not evidence', 'no conflict');
    }
    case 'map-root': {
      if (changes.length || epochs.length !== 1) E('malformed', 'map-root: one epoch record');
      return { kind, needsReplay: true };
    }
  }
}
