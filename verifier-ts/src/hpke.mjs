// design.md 4.2 / 12.2 step 8: deserialize HPKE public keys (RFC 9180 DeserializePublicKey).
import { p256 } from '@noble/curves/nist.js';

/** FIPS 203 7.2 modulus check of an ML-KEM-768 encapsulation key (1184 bytes). */
function mlkem768KeyOK(ek) {
  if (ek.length !== 1184) return false;
  for (let i = 0; i < 1152; i += 3) {
    const a = ek[i] | ((ek[i + 1] & 0x0f) << 8);
    const b = (ek[i + 1] >> 4) | (ek[i + 2] << 4);
    if (a >= 3329 || b >= 3329) return false;
  }
  return true;
}
/** @returns {boolean} whether the key deserializes for its KEM */
export function hpkeKeyUsable(kem, key) {
  switch (kem) {
    case 0x0020: return key.length === 32;
    case 0x0010:
      if (key.length !== 65 || key[0] !== 4) return false;
      try { p256.Point.fromBytes(key).assertValidity(); return true; } catch { return false; }
    case 0x0041: return mlkem768KeyOK(key);
    case 0x647a: return key.length === 1216 && mlkem768KeyOK(key.subarray(0, 1184));
    default: return false;
  }
}
