// design.md 12.3: parse and open message envelopes (HPKE mode base, RFC 9180), formats 1 and 2;
// check a format-2 envelope's signature (4.3 message statement).
import { CipherSuite, DhkemX25519HkdfSha256, DhkemP256HkdfSha256, HkdfSha256, HkdfSha384, HkdfSha512, Aes128Gcm, Aes256Gcm } from '@hpke/core';
import { XWing } from '@hpke/hybridkem-x-wing';
import { Reader, concat, eq, hex } from './util.mjs';
import { KEM_SIZES, KDFS, AEADS, verifyEd25519 } from './encodings.mjs';

export class EnvelopeError extends Error {}
const td = new TextDecoder('utf-8', { fatal: true });

/** @param {Uint8Array} b */
export function parseEnvelope(b) {
  try {
    const r = new Reader(b);
    const version = r.u8();
    if (version !== 1 && version !== 2) throw new Error('envelope version');
    const kem = r.u16(), kdf = r.u16(), aead = r.u16();
    if (!(kem in KEM_SIZES) || !KDFS.includes(kdf) || !AEADS.includes(aead)) throw new Error('suite outside 4.2');
    const deviceId = r.bytes(16);
    const str = () => td.decode(r.bytes(r.u16()));
    const from = str(), to = str(), owner = str();
    let senderDevice = null, timestamp = null, messageId = null;
    if (version === 2) {
      if (from === '') throw new Error('format 2 without a sender handle');
      senderDevice = r.bytes(16); timestamp = r.u64(); messageId = r.bytes(16);
    }
    const header = b.subarray(0, r.o);
    const encLen = r.u16(); if (encLen > 2048) throw new Error('enc too long');
    const enc = r.bytes(encLen);
    const ctLen = r.u32(); if (ctLen > 16 * 1024 * 1024 + 64) throw new Error('ciphertext too long');
    const ct = r.bytes(ctLen);
    const body = b.subarray(0, r.o);
    const signature = version === 2 ? r.bytes(64) : null;
    r.done();
    return { version, kem, kdf, aead, deviceId, from, to, owner, senderDevice, timestamp, messageId, header, enc, ct, body, signature };
  } catch (e) { throw new EnvelopeError('envelope: ' + e.message); }
}

/** 4.3: "kt/v1/message" || 0x00 || u16 len(origin) || origin || the envelope without its signature. */
export function messageStatement(origin, e) {
  const o = new TextEncoder().encode(origin);
  return concat('kt/v1/message', new Uint8Array([0, o.length >> 8, o.length & 0xff]), o, e.body);
}

/** 12.3: does a parsed format-2 envelope's signature verify under the sender device's message key? */
export function verifyEnvelopeSignature(origin, e, messageKey) {
  return e.version === 2 && messageKey.length === 32 && verifyEd25519(messageKey, messageStatement(origin, e), e.signature);
}

function suiteFor(kem, kdf, aead) {
  const K = { 0x0020: () => new DhkemX25519HkdfSha256(), 0x0010: () => new DhkemP256HkdfSha256(), 0x647a: () => new XWing() }[kem];
  const D = { 1: HkdfSha256, 2: HkdfSha384, 3: HkdfSha512 }[kdf];
  const A = { 1: Aes128Gcm, 2: Aes256Gcm }[aead];
  if (!K || !D || !A) throw new EnvelopeError('suite not supported by this verifier');
  return new CipherSuite({ kem: K(), kdf: new D(), aead: new A() });
}

/**
 * Open an envelope for this device. device: {id, kem, kdf, aead, privateKey (RFC 9180 SerializePrivateKey)}.
 * @returns {Promise<{plaintext:Uint8Array, from:string, to:string, owner:string}>}
 */
export async function openEnvelope(device, envelope) {
  const e = parseEnvelope(envelope);
  if (!eq(e.deviceId, device.id)) throw new EnvelopeError('envelope for another device');
  if (e.kem !== device.kem || e.kdf !== device.kdf || e.aead !== device.aead) throw new EnvelopeError('envelope for another suite');
  const suite = suiteFor(e.kem, e.kdf, e.aead);
  try {
    const recipientKey = await suite.kem.deserializePrivateKey(device.privateKey);
    const info = concat('kt/v1/envelope', new Uint8Array([0]), e.header);
    const pt = await suite.open({ recipientKey, enc: e.enc, info }, e.ct);
    return { plaintext: new Uint8Array(pt), from: e.from, to: e.to, owner: e.owner, version: e.version, senderDevice: e.senderDevice, timestamp: e.timestamp, messageId: e.messageId };
  } catch (err) { throw new EnvelopeError('envelope does not open: ' + err.message); }
}
export { hex };
