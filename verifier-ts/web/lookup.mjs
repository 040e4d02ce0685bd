// The lookup page (issue 19 item 4): looks a handle up through the HTTP/JSON API (design.md 10.1)
// and verifies the answer in the browser with this verifier (12.2), showing each step.
// Query parameters: api (the API base URL, default: this origin), handle (look it up at once).
// The parameters are fetched with GetParameters: an app would pin them instead (design.md 11).
import { verifyLookup } from '../src/verify.mjs';
import { call, paramsFromAPI, lookupFromAPI } from '../src/api.mjs';

const q = new URLSearchParams(location.search);
const api = (q.get('api') ?? location.origin).replace(/\/$/, '');
const $ = (id) => document.getElementById(id);
$('api').textContent = api;

function step(cls, name, detail) {
  const li = document.createElement('li');
  li.className = cls; li.dataset.step = name;
  li.textContent = `${name}: ${detail}`;
  $('steps').append(li);
}

async function lookup(handle) {
  $('steps').replaceChildren(); $('devices').replaceChildren();
  const res = $('result'); res.className = ''; res.textContent = 'looking up…';
  try {
    const params = paramsFromAPI(await call(api, 'GetParameters', {}));
    const answer = await call(api, 'Lookup', { handle, knownSize: '0' });
    const r = verifyLookup({ params, trusted: null, handle, response: lookupFromAPI(answer), now_unix_ms: Date.now() },
      { onStep: (name, detail) => step('ok', name, detail) });
    res.className = 'verified';
    res.dataset.step = '';
    if (!r.registered) { res.textContent = `verified: ${handle} is not registered (epoch ${r.epoch})`; return; }
    res.textContent = `verified: version ${r.version}, ${r.device_ids_hex.length} device${r.device_ids_hex.length === 1 ? '' : 's'}, epoch ${r.epoch}`;
    for (const id of r.device_ids_hex) { const c = document.createElement('code'); c.className = 'device'; c.textContent = id; $('devices').append(c, document.createElement('br')); }
  } catch (e) {
    res.className = 'rejected';
    res.dataset.step = e.step ?? 'network';
    if (e.step) step('fail', e.step, e.message);
    res.textContent = `rejected at step "${e.step ?? 'network'}": ${e.message}`;
  }
  document.body.dataset.done = 'true';
}

$('form').addEventListener('submit', (ev) => { ev.preventDefault(); lookup($('handle').value); });
if (q.get('handle')) { $('handle').value = q.get('handle'); lookup(q.get('handle')); }
