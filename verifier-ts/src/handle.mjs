// design.md 3.1 handle normalisation, written from the text (not from api/handle.go).
export class InvalidHandleError extends Error {}
const bad = (m) => { throw new InvalidHandleError('invalid handle: ' + m); };
const utf8len = (s) => new TextEncoder().encode(s).length;

/** Go unicode.ToLower per code point (simple case mapping). */
function simpleLower(s) {
  let out = '';
  for (const ch of s) {
    if (ch === '\u0130') { out += 'i'; continue; } // the only code point whose full lowercase is two code points
    const l = ch.toLowerCase();
    out += [...l].length === 1 ? l : ch;
  }
  return out;
}

/** @param {string} input @returns {string} canonical handle */
export function normalizeHandle(input) {
  // SPEC ambiguity: 3.1 says surrounding white space is trimmed for email; the vectors trim phones too.
  const s = input.trim();
  if (s === '') bad('empty');
  if (/^tel:/i.test(s) || s.startsWith('+')) return phone(s.replace(/^tel:/i, ''));
  return email(s.replace(/^mailto:/i, ''));
}

function phone(s) {
  if (!s.startsWith('+')) bad('phone number without +');
  if (s.includes(';')) bad('phone parameters or extensions');
  const rest = s.slice(1);
  if (!/^[0-9 \-.()]*$/.test(rest)) bad('character not allowed in a phone number');
  const digits = rest.replace(/[ \-.()]/g, '');
  if (digits.length < 8 || digits.length > 15) bad('phone number must have 8 to 15 digits');
  if (digits[0] === '0') bad('phone number starts with 0');
  return 'tel:+' + digits;
}

const ATEXT = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\p{L}\p{M}\p{Nd}]+$/u;
function email(s) {
  s = s.normalize('NFC');
  s = simpleLower(s).normalize('NFC');
  const parts = s.split('@');
  if (parts.length !== 2) bad('an address needs exactly one @');
  const [local, domain] = parts;
  const ll = utf8len(local);
  if (ll < 1 || ll > 64) bad('local part must be 1 to 64 bytes');
  for (const atom of local.split('.')) {
    if (atom === '') bad('local part is not a dot-atom');
    if (!ATEXT.test(atom) || /[\u0000-\u001f\u007f]/.test(atom)) bad('character not allowed in the local part');
  }
  const ascii = domainToASCII(domain);
  const addr = local + '@' + ascii;
  if (utf8len(addr) > 254) bad('address longer than 254 bytes');
  return 'mailto:' + addr;
}

function domainToASCII(d) {
  if (d === '' || d.endsWith('.')) bad('domain empty or with a trailing dot');
  if (d.startsWith('[')) bad('address literal');
  // Reject ASCII outside letters, digits, hyphen and dot before the URL parser sees it
  // (UseSTD3ASCIIRules); non-ASCII goes through UTS #46 in the WHATWG URL parser.
  if (/[\u0000-\u002c\u002f\u003a-\u0040\u005b-\u0060\u007b-\u007f]/.test(d)) bad('character not allowed in the domain');
  // Label by label (UTS #46 maps the ideographic full stops to '.'), so that the URL parser's
  // IPv4 rules never see an ASCII label such as 0x1; ASCII labels are only lowercased.
  const a = d.split(/[.\u3002\uff0e\uff61]/).map(l => {
    if (/^[\u0000-\u007f]*$/.test(l) && !/^xn--/i.test(l)) return l.toLowerCase();
    let h;
    try { h = new URL('http://' + l + '.invalid/').hostname; } catch { bad('domain does not convert with UTS #46'); }
    if (!h.endsWith('.invalid') || h.slice(0, -8).includes('.')) bad('domain label does not convert with UTS #46');
    return h.slice(0, -8);
  }).join('.');
  checkBidi(d.split(/[.\u3002\uff0e\uff61]/));
  if (a.length > 253) bad('domain longer than 253 bytes');
  const labels = a.split('.');
  if (labels.length < 2) bad('domain needs at least two labels');
  for (const l of labels) {
    if (l.length < 1 || l.length > 63) bad('domain label must be 1 to 63 bytes');
    if (!/^[a-z0-9-]+$/.test(l)) bad('domain label not letters, digits, hyphens');
    if (l.startsWith('-') || l.endsWith('-')) bad('domain label with a hyphen at an end');
    if (l.length >= 4 && l[2] === '-' && l[3] === '-' && !l.startsWith('xn--')) bad('hyphens in positions 3 and 4');
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1])) bad('numeric top-level label');
  return a;
}

// Part of UTS #46 CheckBidi (RFC 5893), which the WHATWG URL parser of Node and browsers does
// not apply: in a domain with a right-to-left label, no label starts with a digit, a
// left-to-right label holds no Arabic digits, and no label mixes European and Arabic digits.
// Bidi classes are approximated by scripts (JavaScript regular expressions have no Bidi_Class).
const RTL = /[\p{Script=Hebrew}\p{Script=Arabic}\p{Script=Syriac}\p{Script=Thaana}\p{Script=Nko}\p{Script=Samaritan}\p{Script=Mandaic}\p{Script=Adlam}]/u;
const AN = /[\u0600-\u0605\u0660-\u0669\u066b\u066c\u06dd\u0890\u0891\u08e2]/u;
function checkBidi(labels) {
  if (!labels.some(l => RTL.test(l) || AN.test(l))) return;
  for (const l of labels) {
    const first = [...l][0] ?? '';
    if (!/\p{L}/u.test(first)) bad('bidi domain label must start with a letter (CheckBidi)');
    const rtl = RTL.test(l) || AN.test(l);
    if (!rtl && AN.test(l)) bad('Arabic digits in a left-to-right label (CheckBidi)');
    if (rtl && AN.test(l) && /[0-9\u06f0-\u06f9]/.test(l)) bad('European and Arabic digits mixed (CheckBidi)');
  }
}
