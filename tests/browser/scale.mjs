// Browser test of a scaled site (started by tests/browser/scale.sh): an upload through node A,
// watched through node B with dash.js and hls.js in Chromium while a worker process encodes it.
// Node B runs no job and keeps no media: everything it plays comes from the bucket.
// Prints `ok - name` / `not ok - name: reason`; exits 1 on a failure.
import { createRequire } from 'node:module';
import { readFileSync, mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const require = createRequire(path.join(root, 'web', 'package.json'));
const { chromium } = require('playwright-core');
const { CASCADE_A: A, CASCADE_B: B, CASCADE_TOKEN: TOKEN, CASCADE_CLIP: CLIP, CASCADE_DB: DB, PG_VERSION } = process.env;
if (!A || !B || !TOKEN || !CLIP || !DB || !PG_VERSION || !process.env.CASCADE_WORKERS) {
  console.error('CASCADE_A, CASCADE_B, CASCADE_TOKEN, CASCADE_CLIP, CASCADE_DB, CASCADE_WORKERS and PG_VERSION are required');
  process.exit(2);
}
// The worker processes: `pid=node id` each, space-separated.
const WORKERS = process.env.CASCADE_WORKERS.split(' ').map((w) => { const [pid, node] = w.split('='); return { pid: Number(pid), node }; });
const LEASE = Number(process.env.CASCADE_JOB_LEASE || 30);
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

  // Both players start on node B while a worker encodes.
  const watchers = await Promise.all(['dash', 'hls'].map(async (kind) => {
    const page = await browser.newPage();
    const w = { kind, page, errors: [], media: [] };
    page.on('pageerror', (e) => w.errors.push(String(e)));
    page.on('response', (r) => { if (r.url().includes('/play/')) w.media.push({ status: r.status(), host: new URL(r.url()).host, path: new URL(r.url()).pathname, at: Date.now() }); });
    await page.goto(`${B}/watch/${id}?player=${kind}`);
    await page.waitForFunction(() => window.cascadePlayer && window.cascadePlayer.kind, null, { timeout: 30000 });
    await page.evaluate(() => { const v = document.getElementById('video'); v.muted = true; v.play().catch(() => {}); });
    return w;
  }));
  const atStart = await api(B, `/api/videos/${id}`);
  if (atStart.status !== 'processing') throw new Error(`record already ${atStart.status} when playback started: the clip is too short to test this`);
  const state = (w) => w.page.evaluate(() => {
    const v = document.getElementById('video');
    return { t: v.currentTime, w: v.videoWidth, ended: v.ended, kind: window.cascadePlayer.kind, errors: window.cascadePlayer.errors.slice(),
      recoveries: window.cascadePlayer.recoveries ? window.cascadePlayer.recoveries() : 0 };
  });
  const playsPast = (w, seconds, ms) => waitFor(`${w.kind} currentTime > ${seconds} s`, async () => {
    const st = await state(w);
    if (st.errors.length) throw new Error(`player errors: ${st.errors.join(' | ')}`);
    if (w.errors.length) throw new Error(w.errors.join('; '));
    return (st.t > seconds || st.ended) && st.w > 0 && st;
  }, ms);
  const phase = async (what, fn) => {
    const results = await Promise.allSettled(watchers.map(fn));
    let ok = true;
    for (const [i, w] of watchers.entries()) {
      const r = results[i];
      if (r.status === 'fulfilled') console.log(`ok - scaled: ${what} with ${w.kind}${r.value ? ` (${r.value})` : ''}`);
      else { ok = false; failed++; console.log(`not ok - scaled: ${what} with ${w.kind}: ${r.reason.message.split('\n')[0]}`); }
    }
    return ok;
  };
  const media = (w) => {
    const hosts = new Set(w.media.map((m) => m.host));
    if (hosts.size !== 1 || !hosts.has(new URL(B).host)) throw new Error(`media came from ${[...hosts]}`);
    const bad = w.media.filter((m) => m.status !== 200 && m.status !== 206);
    if (bad.length) throw new Error(`media requests answered ${bad.slice(0, 5).map((m) => `${m.status} ${m.path.split('/').slice(-3).join('/')}`).join(', ')}`);
  };

  if (!await phase('node B plays what a worker encodes, from the bucket', async (w) => {
    const s = await playsPast(w, 6, 120000);
    if (s.kind !== w.kind) throw new Error(`player is ${s.kind}`);
    media(w);
    await w.page.screenshot({ path: path.join(ART, `scaled-${w.kind}.png`) });
    return `past ${s.t.toFixed(1)} s, started while processing at ${Math.round(atStart.progress * 100)} %, ${w.media.length} media requests`;
  })) throw new Error('playback did not start');

  // The worker holding the job is killed while they play, and the database restarts: the other
  // worker takes the job over, and the players go on to the end of the video from what B serves.
  const holderOf = () => execFileSync('psql', [DB, '-Atc',
    `SELECT convert_from(v, 'UTF8')::json->>'holder' FROM cascade_kv WHERE tree = 'jobs' AND k = convert_to('${id}', 'UTF8')`]).toString().trim();
  const holder = holderOf();
  const victim = WORKERS.find((w) => w.node === holder);
  if (!victim) throw new Error(`the job's holder ${JSON.stringify(holder)} is none of the workers ${WORKERS.map((w) => w.node)}`);
  const before = await api(B, `/api/videos/${id}`);
  if (before.status !== 'processing') throw new Error(`record already ${before.status} before the kill: the clip is too short to test this`);
  process.kill(victim.pid, 'SIGKILL');
  const killedAt = Date.now();
  console.log(`#   killed the worker holding the job at ${Math.round(before.progress * 100)} % encoded; players at ${(await Promise.all(watchers.map(state))).map((s) => s.t.toFixed(1)).join(' / ')} s`);
  execFileSync('pg_ctlcluster', ['--skip-systemctl-redirect', PG_VERSION, 'main', 'restart'], { timeout: 120000 });
  console.log(`#   PostgreSQL restarted ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill`);
  const survivor = WORKERS.find((w) => w !== victim);
  await waitFor('the other worker to take the job over', async () => { try { return holderOf() === survivor.node; } catch (_) { return false; } }, (LEASE + 10) * 1000);
  console.log(`ok - scaled: the other worker took the job over ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill (lease ${LEASE} s)`);
  await phase('played to the end through the take-over and the database restart', async (w) => {
    const s = await playsPast(w, 55, 300000);
    media(w);
    return `at ${s.t.toFixed(1)} s, ${w.media.length} media requests, ${s.recoveries} reloads`;
  });
  for (const w of watchers) await w.page.close().catch(() => {});
  const v = await waitFor('ready through B', async () => { const r = await api(B, `/api/videos/${id}`); return r.status === 'ready' && r; }, 300000);
  if (v.attempts < 2) throw new Error(`ready after ${v.attempts} attempt(s): the take-over did not happen`);
  console.log(`ok - scaled: ready through node B after the take-over (${v.renditions.length} renditions, ${v.attempts} attempts)`);
} catch (e) {
  failed++;
  console.log(`not ok - scaled: ${e.message.split('\n')[0]}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
