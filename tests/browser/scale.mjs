// Browser test of a scaled site (started by tests/browser/scale.sh): an upload through node A,
// watched through node B with dash.js and hls.js in Chromium while a worker process encodes it.
// Node B runs no job and keeps no media: everything it plays comes from the bucket.
// Prints `ok - name` / `not ok - name: reason`; exits 1 on a failure.
import { createRequire } from 'node:module';
import { readFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const require = createRequire(path.join(root, 'web', 'package.json'));
const { chromium } = require('playwright-core');
const { CASCADE_A: A, CASCADE_B: B, CASCADE_TOKEN: TOKEN, CASCADE_CLIP: CLIP } = process.env;
if (!A || !B || !TOKEN || !CLIP) { console.error('CASCADE_A, CASCADE_B, CASCADE_TOKEN and CASCADE_CLIP are required'); process.exit(2); }
const ART = path.join(root, 'test-artifacts');
mkdirSync(ART, { recursive: true });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function api(base, p, opts = {}) {
  const r = await fetch(base + p, { ...opts, headers: { ...(opts.headers || {}), Authorization: `Bearer ${TOKEN}` } });
  if (!r.ok) throw new Error(`${base}${p}: HTTP ${r.status} ${await r.text()}`);
  return r.json();
}
async function waitFor(what, fn, ms, every = 200) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await fn();
    if (v) return v;
    await sleep(every);
  }
  throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
let failed = 0;
try {
  const form = new FormData();
  form.append('title', 'scaled');
  form.append('file', new Blob([readFileSync(CLIP)]), path.basename(CLIP));
  const { id } = await api(A, '/api/videos', { method: 'POST', body: form });
  // Playable on node B: its record says so only once the bucket has the manifests and segments.
  await waitFor('playable through B', async () => (await api(B, `/api/videos/${id}`)).playable, 300000);
  const results = await Promise.allSettled(['dash', 'hls'].map(async (kind) => {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    const fromB = [];
    page.on('response', (r) => { if (r.url().includes('/play/')) fromB.push(`${r.status()} ${new URL(r.url()).host}`); });
    try {
      await page.goto(`${B}/watch/${id}?player=${kind}`);
      await page.waitForFunction(() => window.cascadePlayer && window.cascadePlayer.kind, null, { timeout: 30000 });
      await page.evaluate(() => { const v = document.getElementById('video'); v.muted = true; v.play().catch(() => {}); });
      const atStart = await api(B, `/api/videos/${id}`);
      if (atStart.status !== 'processing') throw new Error(`record already ${atStart.status} when playback started: the clip is too short to test this`);
      const s = await waitFor('currentTime > 6 s', async () => {
        const st = await page.evaluate(() => {
          const v = document.getElementById('video');
          return { t: v.currentTime, w: v.videoWidth, kind: window.cascadePlayer.kind, errors: window.cascadePlayer.errors.slice() };
        });
        if (st.errors.length) throw new Error(`player errors: ${st.errors.join(' | ')}`);
        if (errors.length) throw new Error(errors.join('; '));
        return st.t > 6 && st.w > 0 && st;
      }, 120000);
      if (s.kind !== kind) throw new Error(`player is ${s.kind}`);
      const hosts = new Set(fromB.map((x) => x.split(' ')[1]));
      if (hosts.size !== 1 || !hosts.has(new URL(B).host)) throw new Error(`media came from ${[...hosts]}`);
      const bad = fromB.filter((x) => !x.startsWith('200') && !x.startsWith('206'));
      if (bad.length) throw new Error(`media requests answered ${bad.slice(0, 5)}`);
      await page.screenshot({ path: path.join(ART, `scaled-${kind}.png`) });
      console.log(`#   ${kind}: played past ${s.t.toFixed(1)} s through node B, started while processing at ${Math.round(atStart.progress * 100)} %, ${fromB.length} media requests`);
    } finally {
      await page.close().catch(() => {});
    }
  }));
  for (const [i, kind] of ['dash', 'hls'].entries()) {
    const r = results[i];
    if (r.status === 'fulfilled') console.log(`ok - scaled: node B plays with ${kind} what a worker encodes, from the bucket`);
    else { failed++; console.log(`not ok - scaled: node B plays with ${kind}: ${r.reason.message.split('\n')[0]}`); }
  }
  const v = await waitFor('ready through B', async () => { const r = await api(B, `/api/videos/${id}`); return r.status === 'ready' && r; }, 300000);
  console.log(`ok - scaled: ready through node B (${v.renditions.length} renditions)`);
} catch (e) {
  failed++;
  console.log(`not ok - scaled: ${e.message.split('\n')[0]}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
