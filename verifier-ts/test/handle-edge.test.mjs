// Edge cases of handle normalisation (design.md 3.1) where a JavaScript implementation can
// drift from the Go one: Unicode case mapping, UTS #46 through the WHATWG URL parser (IPv4
// rules, punycode validation, CheckBidi), letter numbers. Expected values are api.NormalizeHandle's
// (null: refused), recorded when this verifier was written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizeHandle } from '../src/handle.mjs';

const cases = [
  ["\tuser@example.com", "mailto:user@example.com"],
  ["\"a\"@c.de", null],
  ["+ 14155550100", "tel:+14155550100"],
  ["++14155550100", null],
  ["+1(415)555-0100", "tel:+14155550100"],
  ["+1-415-555-0100-", "tel:+14155550100"],
  ["+1 415 555 0100", null],
  ["K@example.com", "mailto:k@example.com"],
  ["MAILTO:A@C.DE", "mailto:a@c.de"],
  ["a+b@c.d", "mailto:a+b@c.d"],
  ["a/b@c.de", "mailto:a/b@c.de"],
  ["a=b@c.de", "mailto:a=b@c.de"],
  ["a@-b.com", null],
  ["a@1.2.3.4", null],
  ["a@1.2.3.com", "mailto:a@1.2.3.com"],
  ["a@EXAMPLE.com ", "mailto:a@example.com"],
  ["a@[::1]", null],
  ["a@a.b", "mailto:a@a.b"],
  ["a@a_b.com", null],
  ["a@ab--cd.com", null],
  ["a@b-.com", null],
  ["a@b.c1", "mailto:a@b.c1"],
  ["a@b.com.", null],
  ["a@b.xn--p1ai", "mailto:a@b.xn--p1ai"],
  ["a@c.de@", null],
  ["a@exa mple.com", null],
  ["a@münchen.de", "mailto:a@xn--mnchen-3ya.de"],
  ["a@xn--ab.com", null],
  ["a@١٢٣.com", null],
  ["a@‍example.com", null],
  ["a@ⓐ.com", "mailto:a@a.com"],
  ["a@例子.广告", "mailto:a@xn--fsqu00a.xn--4rr70v"],
  ["mailto:a@c.de", "mailto:a@c.de"],
  ["straße@example.de", "mailto:straße@example.de"],
  ["tel:+1 415 555 0100 ", "tel:+14155550100"],
  ["tel:+4420", null],
  ["user@XN--BCHER-KVA.example", "mailto:user@xn--bcher-kva.example"],
  ["user@example.com\n", "mailto:user@example.com"],
  ["user@example。com", "mailto:user@example.com"],
  ["user@ex­ample.com", "mailto:user@example.com"],
  ["user@faß.de", "mailto:user@xn--fa-hia.de"],
  ["user@straße.de", "mailto:user@xn--strae-oqa.de"],
  ["user@xn--bcher-kva.example", "mailto:user@xn--bcher-kva.example"],
  ["user@ＥＸＡＭＰＬＥ.com", "mailto:user@example.com"],
  ["úser@example.com", "mailto:úser@example.com"],
  ["x@a.0x1", "mailto:x@a.0x1"],
  ["x@a.123a", "mailto:x@a.123a"],
  ["x@ab.c-d", "mailto:x@ab.c-d"],
  ["ß@example.com", "mailto:ß@example.com"],
  ["üser@example.com", "mailto:üser@example.com"],
  ["İstanbul@example.com", "mailto:istanbul@example.com"],
  ["ǅ@example.com", "mailto:ǆ@example.com"],
  ["ΣΑΣ@example.gr", "mailto:σασ@example.gr"],
  ["Ⅻ@example.com", null],
  ["ﬁ@example.com", "mailto:ﬁ@example.com"]
];
for (const [input, want] of cases) {
  test(`handle edge: ${JSON.stringify(input)}`, () => {
    if (want === null) { assert.throws(() => normalizeHandle(input)); return; }
    assert.equal(normalizeHandle(input), want);
  });
}
