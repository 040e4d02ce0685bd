import { test } from 'node:test';
import assert from 'node:assert/strict';
import { quorumTime } from '../src/checkpoint.mjs';

// design.md 12.2 step 2.5: the latest T such that the cosignatures dated T
// or later satisfy the quorum on their own: for 2 of 4, the second latest.
test('witness quorum time is the k-th latest cosignature time', () => {
  const p = {
    quorum: 'g',
    witnesses: new Map([['a', {}], ['b', {}], ['c', {}], ['d', {}]]),
    groups: new Map([['g', { members: ['a', 'b', 'c', 'd'], k: 2 }]]),
  };
  const times = new Map([['a', 10], ['b', 20], ['c', 30], ['d', 40]]);
  assert.equal(quorumTime(p, times), 30);
  assert.equal(quorumTime(p, new Map([['a', 10]])), null);
});
