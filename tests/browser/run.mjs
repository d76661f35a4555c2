// Browser tests: Debian's Chromium driven by playwright-core against a real Cascade server.
// Run through tests/browser/run.sh (it starts the server and generates the clips), or by hand:
//   CASCADE_URL=http://127.0.0.1:8000 CASCADE_CLIPS=/dir/with/short.mp4+long.mp4 node tests/browser/run.mjs
// Prints `ok - name` / `not ok - name: reason` per scenario and `N passed, M failed`; exits 1 on failure.
import { createRequire } from 'node:module';
import { spawn } from 'node:child_process';
import http from 'node:http';
import { readFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const require = createRequire(path.join(root, 'web', 'package.json'));
const { chromium } = require('playwright-core');

const BASE = process.env.CASCADE_URL;
const CLIPS = process.env.CASCADE_CLIPS;
if (!BASE || !CLIPS) { console.error('CASCADE_URL and CASCADE_CLIPS are required'); process.exit(2); }
const ART = path.join(root, 'test-artifacts');
mkdirSync(ART, { recursive: true });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const { CASCADE_USER: USER, CASCADE_PASSWORD: PASSWORD, CASCADE_TOKEN: TOKEN, CASCADE_ADMIN: ADMIN, CASCADE_ADMIN_PASSWORD: ADMIN_PASSWORD } = process.env;
const FOREIGN_PORTS = (process.env.CASCADE_FOREIGN_PORTS || '').split(',').filter(Boolean);
if (!USER || !PASSWORD || !TOKEN || !ADMIN || !ADMIN_PASSWORD || FOREIGN_PORTS.length !== 2) {
  console.error('CASCADE_USER, CASCADE_PASSWORD, CASCADE_TOKEN, CASCADE_ADMIN, CASCADE_ADMIN_PASSWORD and CASCADE_FOREIGN_PORTS (two ports) are required');
  process.exit(2);
}
// Two other sites on other ports (other origins): CASCADE_CORS_ORIGINS and CASCADE_EMBED_ORIGINS
// name the first one only. Their page plays `src` with its own hls.js or dash.js (loaded from
// Cascade, as a site would from anywhere), fetches it, or frames it, as `kind` says.
const FOREIGN_PAGE = `<!doctype html><meta charset="utf-8"><title>another site</title>
<video id="v" muted playsinline width="320"></video>
<script src="${BASE}/vendor/hls.min.js"></script><script src="${BASE}/vendor/dash.all.min.js"></script>
<script>
window.result = { errors: [] };
const q = new URLSearchParams(location.search), v = document.getElementById('v'), src = q.get('src');
if (q.get('kind') === 'hls') {
  const h = new Hls();
  h.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) window.result.errors.push('hls ' + d.details); });
  h.loadSource(src); h.attachMedia(v); v.play().catch(() => {});
} else if (q.get('kind') === 'dash') {
  const p = dashjs.MediaPlayer().create();
  p.on(dashjs.MediaPlayer.events.ERROR, (e) => window.result.errors.push('dash ' + JSON.stringify(e.error || e).slice(0, 200)));
  p.initialize(v, src, true);
} else if (q.get('kind') === 'fetch') {
  fetch(src).then((r) => { window.result.status = r.status; }, (e) => { window.result.refused = String(e); });
} else if (q.get('kind') === 'embed') {
  const f = document.createElement('iframe');
  f.src = src; f.width = 640; f.height = 360; f.allow = 'autoplay';
  document.body.append(f);
}
</script>`;
const foreignSites = FOREIGN_PORTS.map((port) => {
  const server = http.createServer((req, res) => { res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' }); res.end(FOREIGN_PAGE); });
  server.listen(Number(port), '127.0.0.1');
  return server;
});
const [ALLOWED, OTHER] = FOREIGN_PORTS.map((p) => `http://127.0.0.1:${p}`);
// A login from node (no cookie jar): the status only.
const loginStatus = async (username, password) => (await fetch(`${BASE}/api/session`, {
  method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ username, password }),
})).status;
// The script's own calls use the uploader's API token; the pages use the session of the login.
async function api(p, opts = {}) {
  const r = await fetch(BASE + p, { ...opts, headers: { ...(opts.headers || {}), Authorization: `Bearer ${TOKEN}` } });
  if (!r.ok) throw new Error(`${p}: HTTP ${r.status} ${await r.text()}`);
  return r.status === 204 ? null : r.json();
}
async function waitFor(what, fn, ms, every = 250) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await sleep(every);
  }
  throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
}
async function uploadViaApi(file, title) {
  const form = new FormData();
  form.append('title', title);
  form.append('file', new Blob([readFileSync(path.join(CLIPS, file))]), file);
  return api('/api/videos', { method: 'POST', body: form });
}
const ready = (id, ms = 300000) => waitFor(`${id} ready`, async () => {
  const v = await api(`/api/videos/${id}`);
  if (v.status === 'failed') throw new Error(`failed: ${JSON.stringify(v.error)}`);
  return v.status === 'ready' && v;
}, ms);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
    // A fake camera and microphone, granted without asking (going live from the browser).
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
});
const foreign = [];
// A browser context whose requests to any other host are recorded (the last scenario fails on them).
async function newContext() {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  ctx.on('request', (req) => {
    const u = new URL(req.url());
    if (!['127.0.0.1', 'localhost'].includes(u.hostname) && !['data:', 'blob:'].includes(u.protocol)) foreign.push(req.url());
  });
  return ctx;
}
const context = await newContext();

const results = [];
let skipped = 0;
async function scenario(name, ms, fn, ctx = context) {
  // BROWSER_ONLY=regex runs only the matching scenarios, for debugging by hand; skipped
  // ones are reported as skipped and never counted as passed. run.sh never sets it.
  if (process.env.BROWSER_ONLY && !new RegExp(process.env.BROWSER_ONLY).test(name)) {
    console.log(`# skipped - ${name}`);
    skipped++;
    return;
  }
  const page = await ctx.newPage();
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(`${String(e)} at ${page.url()}${e.stack ? ` (${e.stack.split('\n').slice(1, 3).join(' ').trim()})` : ''}`));
  // Whatever the pages' Content-Security-Policy blocks (an inline script or style, a worker, a
  // blob: URL the players need) fails the scenario.
  page.on('console', (m) => { if (m.type() === 'error' && /Content.Security.Policy/i.test(m.text())) consoleErrors.push(m.text()); });
  try {
    await Promise.race([fn(page, consoleErrors), sleep(ms).then(() => { throw new Error(`scenario timed out after ${ms / 1000} s`); })]);
    if (consoleErrors.length) throw new Error(`page errors: ${consoleErrors.join('; ')}`);
    results.push([name, null]);
    console.log(`ok - ${name}`);
  } catch (e) {
    results.push([name, e]);
    console.log(`not ok - ${name}: ${e.message.split('\n')[0]}`);
    await page.screenshot({ path: path.join(ART, `failed-${name.replace(/\W+/g, '-')}.png`) }).catch(() => {});
  } finally {
    await page.close().catch(() => {});
  }
}

// Plays and returns the player state once currentTime passes `t`.
async function playsPast(page, t, ms) {
  await page.waitForFunction(() => window.cascadePlayer && window.cascadePlayer.kind, null, { timeout: 30000 });
  await page.evaluate(() => {
    const v = document.getElementById('video');
    if (!window.testSeeks) {
      // Seeks and stalls, for the failure message: a player that jumps back looks like one that stalls.
      window.testSeeks = [];
      v.addEventListener('seeking', () => window.testSeeks.push(`seek@${v.currentTime.toFixed(2)}`));
      v.addEventListener('waiting', () => window.testSeeks.push(`wait@${v.currentTime.toFixed(2)}`));
    }
    v.muted = true;
    v.play().catch(() => {});
  });
  let s;
  try {
    return await waitFor(`currentTime > ${t}`, async () => {
      s = await page.evaluate(() => {
        const v = document.getElementById('video');
        const b = [];
        for (let i = 0; i < v.buffered.length; i++) b.push(`${v.buffered.start(i).toFixed(2)}-${v.buffered.end(i).toFixed(2)}`);
        return { t: v.currentTime, w: v.videoWidth, errors: window.cascadePlayer.errors.slice(), paused: v.paused,
          readyState: v.readyState, buffered: b.join(','), kind: window.cascadePlayer.kind, events: window.testSeeks.slice(-12).join(' ') };
      });
      if (s.errors.length) throw new Error(`player errors: ${s.errors.join(' | ')}`);
      return s.t > t && s.w > 0 && s;
    }, ms);
  } catch (e) {
    // Say where playback stood: a stall and a slow start look alike from the message alone.
    if (s) e.message += ` (${s.kind}: currentTime ${s.t.toFixed(2)}, readyState ${s.readyState}, paused ${s.paused}, buffered [${s.buffered}], events: ${s.events})`;
    throw e;
  }
}

let shortId;
// The uploader's password now (the account scenario changes it).
let userPassword = PASSWORD;
await scenario('log in through /login; the header names the user', 60000, async (page) => {
  await page.goto(`${BASE}/upload`);
  await page.locator('#error').filter({ hasText: 'Log in to upload' }).waitFor({ timeout: 20000 });
  await page.click('#login');
  await page.waitForURL(/\/login\?next=/);
  await page.fill('#username', USER);
  await page.fill('#password', 'wrong password');
  await page.click('#login-button');
  await page.locator('#error').filter({ hasText: 'Wrong user name or password' }).waitFor({ timeout: 20000 });
  await page.fill('#password', PASSWORD);
  await page.click('#login-button');
  await page.waitForURL(`${BASE}/upload`, { timeout: 20000 });
  await page.locator('#account .who').filter({ hasText: USER }).waitFor({ timeout: 20000 });
  const cookies = await context.cookies(BASE);
  const session = cookies.find((c) => c.name === 'cascade_session');
  if (!session || !session.httpOnly || session.sameSite !== 'Lax') throw new Error(`session cookie: ${JSON.stringify(session)}`);
});

await scenario('upload through /upload, progress, watch link', 240000, async (page) => {
  await page.goto(`${BASE}/upload`);
  await page.setInputFiles('#file', path.join(CLIPS, 'short.mp4'));
  await page.fill('#title', 'Browser upload');
  await page.click('#submit');
  await page.waitForFunction(() => Number(document.getElementById('upload-progress').value) >= 100, null, { timeout: 60000 });
  const pct = await page.textContent('#upload-percent');
  if (!pct.includes('100')) throw new Error(`upload percent shows ${pct}`);
  await page.waitForSelector('#watch-link:not([hidden])', { timeout: 180000 });
  await page.screenshot({ path: path.join(ART, 'upload.png') });
  const href = await page.getAttribute('#watch-link', 'href');
  shortId = href.split('/').pop();
  await page.click('#watch-link');
  await page.waitForURL(`**/watch/${shortId}`);
  await page.waitForSelector('#video');
});

for (const kind of ['dash', 'hls']) {
  await scenario(`watch with ${kind}: plays, quality menu switches rendition`, 240000, async (page) => {
    if (!shortId) throw new Error('no uploaded video');
    const v = await ready(shortId);
    await page.goto(`${BASE}/watch/${shortId}?player=${kind}`);
    const s = await playsPast(page, 3, 90000);
    const st = await page.evaluate(() => ({ kind: window.cascadePlayer.kind, list: window.cascadePlayer.renditions() }));
    if (st.kind !== kind) throw new Error(`player is ${st.kind}`);
    const expected = v.renditions.map((r) => r.name);
    if (JSON.stringify([...st.list].sort()) !== JSON.stringify([...expected].sort())) throw new Error(`menu ${st.list} vs ${expected}`);
    const options = await page.$$eval('#quality option', (os) => os.map((o) => o.textContent));
    if (options[0] !== 'Auto' || options.length !== expected.length + 1) throw new Error(`options ${options}`);
    // Pick the lowest rendition and see it in use.
    const lowest = expected[expected.length - 1];
    const value = await page.$$eval('#quality option', (os, name) => os.find((o) => o.textContent.startsWith(name + ' ')).value, lowest);
    await page.selectOption('#quality', value);
    await waitFor(`rendition ${lowest} in use`, async () => (await page.evaluate(() => window.cascadePlayer.current())) === lowest, 30000);
    const label = await page.textContent('#current-rendition');
    if (!label.startsWith(lowest)) throw new Error(`current rendition label ${label}`);
    if (s.w <= 0) throw new Error('no video frames');
    // The Share / Embed box gives the embed player's iframe.
    const snippet = await page.inputValue('#share-embed');
    if (!snippet.startsWith(`<iframe src="${BASE}/embed/${shortId}"`)) throw new Error(`embed code ${snippet}`);
    await page.screenshot({ path: path.join(ART, `watch-${kind}.png`) });
  });
}

// How far every track of the growing stream is published (seconds), read from the manifests the
// player reads: the shortest media playlist (HLS) or SegmentTimeline (DASH).
async function publishedEdge(kind, rec) {
  const text = async (url) => {
    const r = await fetch(new URL(url, BASE));
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return r.text();
  };
  if (kind === 'hls') {
    const master = await text(rec.playback.hls);
    const uris = master.split('\n').filter((l) => l && !l.startsWith('#'));
    const ends = await Promise.all(uris.map(async (u) => {
      const pl = await text(new URL(u, new URL(rec.playback.hls, BASE)).href);
      return [...pl.matchAll(/#EXTINF:([\d.]+)/g)].reduce((a, m) => a + Number(m[1]), 0);
    }));
    return Math.min(...ends);
  }
  const mpd = await text(rec.playback.dash);
  const ends = [...mpd.matchAll(/<SegmentTemplate[^>]*timescale="(\d+)"[^>]*>\s*<SegmentTimeline>(.*?)<\/SegmentTimeline>/gs)].map(([, scale, tl]) => {
    let end = 0;
    for (const [, attrs] of tl.matchAll(/<S ([^>]*?)\/>/g)) {
      const attr = (n) => { const m = attrs.match(new RegExp(`\\b${n}="(\\d+)"`)); return m ? Number(m[1]) : NaN; };
      const t = attr('t'), d = attr('d'), r = attr('r');
      end = (Number.isNaN(t) ? end : t) + d * ((Number.isNaN(r) ? 0 : r) + 1);
    }
    return end / Number(scale);
  });
  if (!ends.length) throw new Error(`no SegmentTimeline in the MPD:\n${mpd}`);
  return Math.min(...ends);
}

// Plays `id` (still encoding) with one player, jumps to a second before the last published segment
// ends, and requires playback to carry on by itself at least 3 s past that edge: the player must
// wait for the encoder's next segments (and the page must say so while it waits), not give up.
async function followsTheEncoder(id, kind) {
  const page = await context.newPage();
  const errors = [];
  const logs = [];
  // The player's own console and the manifest fetches, to tell a player bug from a server one.
  const dumpLogs = () => { for (const l of logs.slice(-25)) console.log(`#   ${kind} ${l}`); };
  try {
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => logs.push(`${m.type()}: ${m.text().slice(0, 300)}`));
    page.on('response', (r) => { if (/\.(mpd|m3u8)$/.test(new URL(r.url()).pathname)) logs.push(`manifest ${r.status()} ${new URL(r.url()).pathname.split('/').slice(-2).join('/')}`); });
    await page.goto(`${BASE}/watch/${id}?player=${kind}`);
    await playsPast(page, 1, 90000);
    const rec = await api(`/api/videos/${id}`);
    if (rec.status !== 'processing') throw new Error(`record already ${rec.status} when playback started: the clip is too short to test this`);
    const edge = await publishedEdge(kind, rec);
    const from = await page.evaluate((t) => {
      const v = document.getElementById('video');
      if (t > v.currentTime) v.currentTime = t;
      return v.currentTime;
    }, Math.max(0, edge - 1));
    // Sample the page while it plays on: a stall of more than 3 s at the encoder's edge must be
    // shown as waiting for the encoder.
    let stall = null;
    let longest = { at: NaN, s: 0, shown: false };
    const target = edge + 3;
    await waitFor(`currentTime > ${target.toFixed(1)} (published edge ${edge.toFixed(1)} s)`, async () => {
      const s = await page.evaluate(() => {
        const v = document.getElementById('video');
        const w = document.getElementById('waiting');
        const r = window.cascadePlayer.record();
        return { t: v.currentTime, paused: v.paused, seeking: v.seeking, errors: window.cascadePlayer.errors.slice(),
          notice: !w.hidden && w.textContent.includes('Waiting for the encoder'), processing: !!r && r.status === 'processing' };
      });
      if (s.errors.length) throw new Error(`player errors: ${s.errors.join(' | ')}`);
      if (errors.length) throw new Error(errors.join('; '));
      if (s.t > target) return true;
      if (!stall || s.t !== stall.t || s.paused || s.seeking) stall = { t: s.t, since: Date.now(), shown: false };
      stall.shown ||= s.notice;
      const stalledFor = (Date.now() - stall.since) / 1000;
      if (stalledFor > longest.s) longest = { at: stall.t, s: stalledFor, shown: stall.shown };
      if (stalledFor > 3 && s.processing && !stall.shown) throw new Error(`stalled at ${s.t.toFixed(2)} s for ${stalledFor.toFixed(1)} s without saying it waits for the encoder`);
      return false;
    }, 180000);
    await page.screenshot({ path: path.join(ART, `progressive-${kind}.png`) });
    const recoveries = await page.evaluate(() => (window.cascadePlayer.recoveries ? window.cascadePlayer.recoveries() : 0));
    const waits = await page.evaluate(() => window.cascadePlayer.encoderWaits());
    console.log(`#   ${kind}: started while processing at ${Math.round(rec.progress * 100)} %, jumped to ${from.toFixed(1)} s (edge ${edge.toFixed(1)} s), ` +
      `played past ${target.toFixed(1)} s; longest stall ${longest.s.toFixed(1)} s at ${Number.isNaN(longest.at) ? '-' : longest.at.toFixed(2)}` +
      `${longest.s > 1 ? (longest.shown ? ' (shown as waiting for the encoder)' : '') : ''}; encoder waits shown: ${waits}` +
      (recoveries ? `; the stall watchdog reloaded the stream ${recoveries}x` : ''));
    if (recoveries) dumpLogs();
  } catch (e) {
    dumpLogs();
    throw new Error(`${kind}: ${e.message}`);
  } finally {
    await page.close();
  }
}

await scenario('progressive: plays while processing, waits for the encoder at its edge and resumes', 420000, async () => {
  const up = await uploadViaApi('long.mp4', 'Long progressive');
  const id = up.id;
  const v = await waitFor('playable', async () => {
    const r = await api(`/api/videos/${id}`);
    if (r.status === 'failed') throw new Error(JSON.stringify(r.error));
    return r.playable && r;
  }, 240000, 100);
  if (v.status !== 'processing') throw new Error(`already ${v.status} when playable: the clip is too short to test this`);
  // Both players at once, so that both meet the video while it is still encoding.
  const outcomes = await Promise.allSettled(['dash', 'hls'].map((kind) => followsTheEncoder(id, kind)));
  const failed = outcomes.filter((o) => o.status === 'rejected').map((o) => o.reason.message);
  if (failed.length) throw new Error(failed.join(' / '));
});

await scenario('streamed upload: processing and watch link while the upload is still running', 300000, async (page) => {
  // The server runs one transcode at a time (CASCADE_WORKERS=1) and a streamed upload is transcoded
  // as it arrives only when a slot is free: let the earlier scenarios' videos finish first, or the
  // upload ends before its job can start (this made the scenario fail when the progressive clip was
  // still encoding on a slow run).
  await waitFor('no video queued or processing', async () => {
    const { videos } = await api('/api/videos');
    return videos.every((v) => v.status !== 'queued' && v.status !== 'processing');
  }, 240000, 500);
  // A slow uplink (CDP network emulation) for a Matroska file, which Cascade transcodes as it arrives.
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 1.5e6 });
  await page.goto(`${BASE}/upload`);
  await page.setInputFiles('#file', path.join(CLIPS, 'long.mkv'));
  await page.fill('#title', 'Streamed from the page');
  await page.click('#submit');
  await page.waitForSelector('#watch-link:not([hidden])', { timeout: 240000 });
  const uploaded = Number(await page.$eval('#upload-progress', (e) => e.value));
  const processing = Number(await page.$eval('#processing-progress', (e) => e.value));
  await page.screenshot({ path: path.join(ART, 'upload-streamed.png') });
  console.log(`#   watch link shown at ${Math.round(uploaded)} % uploaded, ${processing} % processed`);
  if (!(uploaded < 100)) throw new Error(`the watch link appeared only after the upload finished (${uploaded} %)`);
  await page.waitForFunction(() => Number(document.getElementById('upload-progress').value) >= 100, null, { timeout: 240000 });
});

await scenario('resumable upload: a reload halfway, the same file again resumes where it was; the video plays', 360000, async (page) => {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 1e6 });
  const title = 'Resumed after a reload';
  await page.goto(`${BASE}/upload`);
  await page.setInputFiles('#file', path.join(CLIPS, 'long.mp4'));
  await page.fill('#title', title);
  await page.click('#submit');
  await page.waitForFunction(() => Number(document.getElementById('upload-progress').value) >= 30, null, { timeout: 120000 });
  await page.reload();
  // The cut chunk's bytes that arrived are kept: the record says how many.
  const cut = await waitFor('the cut upload on the server', async () => {
    const { videos } = await api('/api/videos?limit=200');
    const v = videos.find((x) => x.title === title);
    return v && v.status === 'uploading' && v.upload_bytes > 0 && v;
  }, 60000);
  await page.setInputFiles('#file', path.join(CLIPS, 'long.mp4'));
  await page.fill('#title', title);
  await page.click('#submit');
  await page.locator('#upload-state').filter({ hasText: 'Resuming' }).waitFor({ timeout: 30000 });
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  await page.waitForSelector('#watch-link:not([hidden])', { timeout: 240000 });
  await ready(cut.id);
  const same = (await api('/api/videos?limit=200')).videos.filter((x) => x.title === title);
  if (same.length !== 1) throw new Error(`${same.length} videos titled "${title}": the second try did not resume the first`);
  console.log(`#   cut at ${cut.upload_bytes} bytes, resumed into the same video`);
  await page.goto(`${BASE}/watch/${cut.id}`);
  await playsPast(page, 2, 90000);
});

await scenario('library lists videos with thumbnails; storyboard preview on hover', 120000, async (page) => {
  await page.goto(`${BASE}/`);
  await page.waitForSelector('text=Browser upload', { timeout: 20000 });
  await page.waitForSelector('text=Long progressive', { timeout: 20000 });
  await page.waitForFunction(() => [...document.querySelectorAll('img.thumbnail')].some((i) => i.complete && i.naturalWidth > 0), null, { timeout: 30000 });
  await page.screenshot({ path: path.join(ART, 'library.png') });
  await page.goto(`${BASE}/watch/${shortId}`);
  await page.waitForFunction(() => window.cascadePlayer && window.cascadePlayer.kind, null, { timeout: 30000 });
  await sleep(1000);
  const box = await page.locator('#scrub').boundingBox();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2);
  await page.waitForFunction(() => {
    const p = document.getElementById('preview');
    return p.style.display === 'block' && p.style.backgroundImage.includes('storyboard.jpg');
  }, null, { timeout: 10000 });
  await page.screenshot({ path: path.join(ART, 'watch-preview.png') });
});

await scenario('account page: an API token made, used and revoked; the password changed', 120000, async (page) => {
  await page.goto(`${BASE}/account`);
  await page.locator('#me-name').filter({ hasText: USER }).waitFor({ timeout: 20000 });
  await page.fill('#token-name', 'from the page');
  await page.click('#token-button');
  const secret = (await page.locator('#new-token-value').textContent({ timeout: 20000 })).trim();
  const me = async () => (await fetch(`${BASE}/api/me`, { headers: { Authorization: `Bearer ${secret}` } })).status;
  if (await me() !== 200) throw new Error('the new token does not work');
  await page.locator('#tokens tr', { hasText: 'from the page' }).locator('button.revoke').click();
  await waitFor('the token revoked', async () => await me() === 401, 20000);
  await page.fill('#current-password', PASSWORD);
  await page.fill('#new-password', `${PASSWORD} changed`);
  await page.click('#password-button');
  await page.locator('#password-done').waitFor({ state: 'visible', timeout: 20000 });
  if (await loginStatus(USER, PASSWORD) !== 401) throw new Error('the old password still works');
  if (await loginStatus(USER, `${PASSWORD} changed`) !== 204) throw new Error('the new password does not work');
  userPassword = `${PASSWORD} changed`;
  // This session goes on (the page got a new cookie).
  await page.goto(`${BASE}/account`);
  await page.locator('#me-name').filter({ hasText: USER }).waitFor({ timeout: 20000 });
});

const adminContext = await browser.newContext({ viewport: { width: 1280, height: 900 } });
await scenario('admin page: create a user, disable them; an invitation link signs someone up', 120000, async (page) => {
  await page.goto(`${BASE}/login?next=/admin`);
  await page.fill('#username', ADMIN);
  await page.fill('#password', ADMIN_PASSWORD);
  await page.click('#login-button');
  await page.waitForURL(`${BASE}/admin`, { timeout: 20000 });
  await page.locator(`#users tr[data-user="${USER}"]`).waitFor({ timeout: 20000 });
  await page.fill('#new-username', 'made-by-admin');
  await page.click('#create-user');
  // The elements exist (hidden) before the answer: wait for what the answer fills in.
  await page.locator('#created-password').filter({ hasText: /\S/ }).waitFor({ timeout: 20000 });
  const made = (await page.locator('#created-password').textContent()).trim();
  if (await loginStatus('made-by-admin', made) !== 204) throw new Error('the generated password does not work');
  const row = page.locator('#users tr[data-user="made-by-admin"]');
  await row.locator('input.disabled').check();
  await row.locator('button.save').click();
  await waitFor('made-by-admin disabled', async () => await loginStatus('made-by-admin', made) === 401, 20000);
  await page.click('#create-invite');
  await page.locator('#invite-link[href*="invite="]').waitFor({ timeout: 20000 });
  const link = await page.locator('#invite-link').getAttribute('href');
  const guest = await browser.newContext();
  try {
    const g = await guest.newPage();
    await g.goto(new URL(link, BASE).href);
    await g.fill('#username', 'invited-guest');
    await g.fill('#password', 'invited guest password');
    await g.click('#signup-button');
    await g.waitForURL(`${BASE}/upload`, { timeout: 20000 });
    await g.locator('#account .who').filter({ hasText: 'invited-guest' }).waitFor({ timeout: 20000 });
  } finally {
    await guest.close();
  }
}, adminContext);
await adminContext.close();

await scenario('a private video leaves the library; after logout its watch page says it is not available', 180000, async (page) => {
  const v = await uploadViaApi('short.mp4', 'soon private');
  await page.goto(`${BASE}/`);
  await page.locator('text=soon private').first().waitFor({ timeout: 30000 });
  // The owner makes it private on its watch page.
  await page.goto(`${BASE}/watch/${v.id}`);
  await page.locator('#title').filter({ hasText: 'soon private' }).waitFor({ timeout: 20000 });
  await page.selectOption('#edit-visibility', 'private');
  await page.fill('#edit-title', 'now private');
  await page.click('#edit-save');
  await page.locator('#edit-done').filter({ hasText: 'Saved' }).waitFor({ timeout: 20000 });
  const after = await api(`/api/videos/${v.id}`);
  if (after.visibility !== 'private' || after.title !== 'now private') throw new Error(`not saved: ${after.visibility} ${after.title}`);
  await page.click('#logout');
  await page.waitForURL(`${BASE}/`);
  await page.locator('#login').waitFor({ timeout: 20000 });
  if (await page.locator('text=now private').count()) throw new Error('the library still shows the private video');
  await page.goto(`${BASE}/watch/${v.id}`);
  await page.locator('#error').filter({ hasText: 'not available' }).waitFor({ timeout: 20000 });
});

// Another site, without a login: a public video and a private one (with a playback URL minted for
// its owner) play in that site's own players; the embed player plays in its frame; a site that is
// not allowed is refused by the browser (no read of the stream, no frame).
const guest = await browser.newContext({ viewport: { width: 1280, height: 900 } });
await scenario('another site plays public and private videos and embeds the player; a site not allowed is refused', 300000, async (page) => {
  const pub = await uploadViaApi('short.mp4', 'cross-origin public');
  const prv = await uploadViaApi('short.mp4', 'cross-origin private');
  await api(`/api/videos/${prv.id}`, { method: 'PATCH', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ visibility: 'private' }) });
  const [p, q] = [await ready(pub.id), await ready(prv.id)];
  const currentTime = (pg) => pg.evaluate(() => {
    if (window.result.errors.length) throw new Error(window.result.errors.join(' | '));
    return document.getElementById('v').currentTime;
  });
  for (const [kind, url] of [['hls', p.playback.hls], ['dash', p.playback.dash], ['hls', q.playback.hls], ['dash', q.playback.dash]]) {
    await page.goto(`${ALLOWED}/?kind=${kind}&src=${encodeURIComponent(BASE + url)}`);
    await waitFor(`${kind} playing past 1 s on ${ALLOWED}`, async () => (await currentTime(page)) > 1, 60000);
  }
  await page.goto(`${ALLOWED}/?kind=embed&src=${encodeURIComponent(`${BASE}/embed/${pub.id}`)}`);
  await waitFor('the embed player playing past 1 s', async () => {
    const frame = page.frames().find((f) => f.url().includes('/embed/'));
    return frame && frame.evaluate(() => { const v = document.getElementById('video'); return !!v && v.currentTime > 1; }).catch(() => false);
  }, 60000);
  if (await page.locator('header.top').count()) throw new Error('site chrome in the embed');

  const other = await guest.newPage();
  const blocked = [];
  other.on('console', (m) => blocked.push(m.text()));
  try {
    await other.goto(`${OTHER}/?kind=fetch&src=${encodeURIComponent(BASE + p.playback.hls)}`);
    const r = await waitFor('the fetch to settle', () => other.evaluate(() => (window.result.refused || window.result.status) && window.result), 20000);
    if (!r.refused) throw new Error(`${OTHER} read the manifest (HTTP ${r.status})`);
    await other.goto(`${OTHER}/?kind=hls&src=${encodeURIComponent(BASE + p.playback.hls)}`);
    await waitFor('hls.js to give up on the refused manifest', () => other.evaluate(() => window.result.errors.length > 0), 60000);
    await other.goto(`${OTHER}/?kind=embed&src=${encodeURIComponent(`${BASE}/embed/${pub.id}`)}`);
    await waitFor('the frame to be refused', () => blocked.some((t) => /frame-ancestors/.test(t)), 20000);
    const framed = other.frames().find((f) => f !== other.mainFrame());
    const player = framed && await framed.evaluate(() => !!document.getElementById('video')).catch(() => false);
    if (player) throw new Error('the embed player loaded in a frame of a site that is not allowed');
  } finally {
    await other.close();
  }
}, guest);
await guest.close();
for (const s of foreignSites) s.close();

// The broadcast of live stream `streamId` once it is playable (its video record).
const livePlayable = (streamId, what) => waitFor(what, async () => {
  const s = await api(`/api/live/${streamId}`);
  if (!s.video_id) return false;
  const r = await api(`/api/videos/${s.video_id}`);
  if (r.status === 'failed') throw new Error(`failed: ${JSON.stringify(r.error)}`);
  return r.playable && r;
}, 60000, 200);

// A finished broadcast plays in `player` as a normal video, with no LIVE badge.
async function playsAsVideo(context, id, player) {
  const vod = await ready(id, 120000);
  const page = await context.newPage();
  try {
    await page.goto(`${BASE}/watch/${vod.id}?player=${player}`);
    await playsPast(page, 1, 60000);
    if (!(await page.locator('#live-badge').isHidden())) throw new Error('a LIVE badge on a finished broadcast');
  } finally {
    await page.close();
  }
}

// Each player opens the watch page of broadcast `rec`, starts near the live edge and, while it
// plays on for 10 s, never falls more than 3 segments behind the edge the server has published.
const LIVE_SEGMENT = 2;
async function playsNearLiveEdge(context, rec) {
  for (const kind of ['dash', 'hls']) {
    const page = await context.newPage();
    try {
      await page.goto(`${BASE}/watch/${rec.id}?player=${kind}`);
      const first = await playsPast(page, 0.5, 60000);
      const startLag = (await publishedEdge(kind, rec)) - first.t;
      // The player settles at its live delay (catching up from where it started) first.
      const from = (await playsPast(page, first.t + 4, 60000)).t;
      let worst = 0;
      await waitFor(`${kind} to play 10 s of the broadcast`, async () => {
        const edge = await publishedEdge(kind, rec);
        const s = await page.evaluate(() => ({ t: document.getElementById('video').currentTime, errors: window.cascadePlayer.errors.slice(),
          badge: !document.getElementById('live-badge').hidden, behind: document.getElementById('behind-live').textContent }));
        if (s.errors.length) throw new Error(`player errors: ${s.errors.join(' | ')}`);
        if (!s.badge) throw new Error('no LIVE badge while the broadcast is on air');
        worst = Math.max(worst, edge - s.t);
        if (edge - s.t > 3 * LIVE_SEGMENT) {
          const events = await page.evaluate(() => (window.testSeeks || []).slice(-12).join(' '));
          throw new Error(`${kind} fell ${(edge - s.t).toFixed(1)} s behind the published edge ${edge.toFixed(1)} s (started at ${first.t.toFixed(1)} s; events: ${events})`);
        }
        return s.t > from + 10 && /behind live/.test(s.behind);
      }, 90000);
      const recoveries = await page.evaluate(() => (window.cascadePlayer.recoveries ? window.cascadePlayer.recoveries() : 0));
      console.log(`#   ${kind}: started at ${first.t.toFixed(1)} s of the broadcast (about ${startLag.toFixed(1)} s behind its edge); ` +
        `then at most ${worst.toFixed(1)} s behind the published edge while playing from ${from.toFixed(1)} s to ${(from + 10).toFixed(1)} s` +
        (recoveries ? `; the stall watchdog reloaded the stream ${recoveries}x` : ''));
    } finally {
      await page.close();
    }
  }
}

// A live broadcast: ffmpeg publishes over RTMP in real time; each player opens the watch page,
// starts near the live edge and, while it plays on for 10 s, never falls more than 3 segments
// (6 s) behind the edge the server has published (the shortest track of the manifest that player
// reads). When the publisher leaves, the same video plays as a normal one.
// Its own context, logged in: the shared one was logged out by the private-video scenario.
const liveContext = await newContext();
await scenario('live: the Go live page and the Live now row; dash.js and hls.js play within 3 segments of the live edge, then as a video', 300000, async (login) => {
  const context = liveContext;
  await login.goto(`${BASE}/login?next=/live`);
  await login.fill('#username', USER);
  await login.fill('#password', userPassword);
  await login.click('#login-button');
  await login.waitForURL(`${BASE}/live`, { timeout: 20000 });
  const stream = await api('/api/live', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ title: 'Browser live' }) });
  const ff = spawn('ffmpeg', ['-nostdin', '-v', 'error', '-re', '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i',
    'sine=frequency=440:sample_rate=48000', '-t', '200', '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', '60',
    '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-b:a', '96k', '-f', 'flv', `${stream.rtmp_url}/${stream.key}`], { stdio: 'ignore' });
  try {
    const rec = await livePlayable(stream.id, 'the broadcast to be playable');
    // The Go live page: the key hidden until asked, the status on air, a preview; the library's
    // "Live now" row.
    const go = await context.newPage();
    try {
      await go.goto(`${BASE}/live`);
      const panel = go.locator(`section.stream[data-id="${stream.id}"]`);
      await panel.waitFor({ timeout: 20000 });
      if ((await panel.locator('code.key').textContent()).includes(stream.key)) throw new Error('the key is shown before it is asked for');
      if (!(await panel.textContent()).includes(stream.rtmp_url)) throw new Error('no server URL on the Go live page');
      await panel.getByRole('button', { name: 'Show key' }).click();
      await waitFor('the key to show', async () => (await panel.locator('code.key').textContent()) === stream.key, 5000);
      // Settings for the next broadcasts, saved from the page.
      if (await panel.locator('input.reconnect-window').inputValue() !== String(stream.reconnect_window_s)) throw new Error('the page does not show the reconnect window');
      await panel.locator('input.reconnect-window').fill('5');
      await panel.locator('select.max-height').selectOption('720');
      await panel.getByRole('button', { name: 'Save settings' }).click();
      await panel.getByText('Saved: they apply from the next broadcast.').waitFor({ timeout: 10000 });
      const saved = await api(`/api/live/${stream.id}`);
      if (saved.reconnect_window_s !== 5 || saved.max_height !== 720 || saved.low_latency !== true) throw new Error(`settings not saved: ${JSON.stringify(saved)}`);
      await panel.locator('.badge.live').waitFor({ timeout: 20000 });
      await panel.locator('iframe').waitFor({ timeout: 20000 });
      // The preview is the embed player, at the live edge with its LIVE badge.
      await go.frameLocator(`section.stream[data-id="${stream.id}"] iframe`).locator('#live-badge').waitFor({ state: 'visible', timeout: 30000 });
      await go.goto(`${BASE}/`);
      await go.locator(`#live-now article[data-id="${rec.id}"] .badge.live`).waitFor({ timeout: 20000 });
    } finally {
      await go.close();
    }
    await playsNearLiveEdge(context, rec);
  } finally {
    ff.kill('SIGKILL');
  }
  // The publisher is gone: after the reconnect window the same video is a normal one.
  await playsAsVideo(context, (await api(`/api/live/${stream.id}`)).video_id, 'hls');
}, liveContext);

// The same over SRT (MPEG-TS, the key as the streamid): the players stay near the live edge, and
// the broadcast becomes a video when its caller leaves (SRT has no reconnect window).
await scenario('live over SRT: dash.js and hls.js play within 3 segments of the live edge, then as a video', 300000, async () => {
  const context = liveContext;
  const stream = await api('/api/live', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ title: 'Browser SRT' }) });
  if (!stream.srt_url) throw new Error(`no srt_url for the owner: ${JSON.stringify(stream)}`);
  const ff = spawn('ffmpeg', ['-nostdin', '-v', 'error', '-re', '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i',
    'sine=frequency=440:sample_rate=48000', '-t', '200', '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', '60',
    '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-b:a', '96k', '-f', 'mpegts', stream.srt_url], { stdio: 'ignore' });
  let id;
  try {
    const rec = await livePlayable(stream.id, 'the SRT broadcast to be playable');
    id = rec.id;
    await playsNearLiveEdge(context, rec);
  } finally {
    ff.kill('SIGKILL');
  }
  await playsAsVideo(context, id, 'dash');
}, liveContext);

// Low-Latency HLS: the watch page of a broadcast on air plays its LL-HLS playlists in hls.js's
// low-latency mode (parts, blocking playlist reload) for 60 s without a single stall, and says
// how far behind the camera it plays (EXT-X-PROGRAM-DATE-TIME against the clock).
await scenario('live low latency: hls.js and dash.js in low-latency mode play 60 s of a broadcast each with no stall', 420000, async () => {
  const context = liveContext;
  const stream = await api('/api/live', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ title: 'Browser LL' }) });
  if (stream.low_latency !== true) throw new Error(`low latency is not on by default: ${JSON.stringify(stream)}`);
  const ff = spawn('ffmpeg', ['-nostdin', '-v', 'error', '-re', '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i',
    'sine=frequency=440:sample_rate=48000', '-t', '200', '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', '60',
    '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-b:a', '96k', '-f', 'flv', `${stream.rtmp_url}/${stream.key}`], { stdio: 'ignore' });
  let failure = null;
  try {
    const rec = await livePlayable(stream.id, 'the low-latency broadcast to be playable');
    if (!rec.playback.hls_low_latency) throw new Error(`no low-latency URL on air: ${JSON.stringify(rec.playback)}`);
    // The watch page's own choice is hls.js's low-latency mode; dash.js's is ?player=lldash.
    for (const [query, want] of [['?player=lldash', 'lldash'], ['', 'llhls']]) await playsLowLatency(context, rec, query, want);
  } catch (e) {
    failure = e;
  } finally {
    ff.kill('SIGKILL');
  }
  // The broadcast ends (a video) and frees the server's live slot for the next scenario, also
  // when this one failed (a failure here must not fail the next one too).
  try {
    await ready((await api(`/api/live/${stream.id}`)).video_id, 120000);
  } catch (e) {
    if (!failure) throw e;
  }
  if (failure) throw failure;
}, liveContext);

// Going live from the browser (WHIP): the Go live page sends Chromium's fake camera and
// microphone with WebRTC; a second page plays the broadcast (low latency), the page shows how late
// viewers see it, and after Stop the broadcast is a video.
await scenario('live from the browser: the Go live page goes live over WHIP; another page plays it; it ends as a video', 300000, async () => {
  const context = liveContext;
  const stream = await api('/api/live', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ title: 'Browser WHIP' }) });
  const go = await context.newPage();
  let id;
  try {
    // Logged in here (also when this scenario runs alone).
    await go.goto(`${BASE}/login?next=/live`);
    await go.fill('#username', USER);
    await go.fill('#password', userPassword);
    await go.click('#login-button');
    await go.waitForURL(`${BASE}/live`, { timeout: 20000 });
    const panel = go.locator(`section.stream[data-id="${stream.id}"]`);
    await panel.waitFor({ timeout: 20000 });
    await panel.getByRole('button', { name: 'Go live from this browser' }).click();
    await panel.locator('video.camera').waitFor({ state: 'visible', timeout: 20000 });
    const rec = await livePlayable(stream.id, 'the WHIP broadcast to be playable').catch(async (e) => {
      throw new Error(`${e.message}; the page says: ${await go.locator('#error').textContent()}`);
    });
    id = rec.id;
    const page = await context.newPage();
    try {
      await page.goto(`${BASE}/watch/${rec.id}`);
      await playsPast(page, 3, 60000);
      const kind = await page.evaluate(() => window.cascadePlayer.kind);
      if (kind !== 'llhls') throw new Error(`the watch page chose ${kind}`);
    } finally {
      await page.close();
    }
    await waitFor('the Go live page to say how late viewers see it', async () => /Viewers see you [\d.]+ s after the camera/.test(await panel.locator('.latency').textContent()), 60000);
    console.log(`#   ${await panel.locator('.latency').textContent()}`);
    await panel.getByRole('button', { name: 'Stop' }).click();
    await panel.getByRole('button', { name: 'Go live from this browser' }).waitFor({ timeout: 20000 });
  } finally {
    await go.close();
  }
  const vod = await ready(id, 120000);
  console.log(`#   the page's broadcast: ${vod.source.video_codec} + ${vod.source.audio_codec}, ${vod.source.width}x${vod.source.height}`);
  await playsAsVideo(context, id, 'dash');

  // Any WHIP client: one that offers H.264 only (Chromium's own encoder) goes live the same way.
  const client = await context.newPage();
  let h264;
  try {
    await client.goto(`${BASE}/healthz`);
    const location = await client.evaluate(async ({ id, key }) => {
      const media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: true });
      const pc = new RTCPeerConnection();
      window.whip = { pc, media };
      for (const t of media.getTracks()) {
        const tr = pc.addTransceiver(t, { direction: 'sendonly', streams: [media] });
        if (t.kind === 'video') {
          tr.setCodecPreferences(RTCRtpSender.getCapabilities('video').codecs
            .filter((c) => c.mimeType === 'video/H264' && /packetization-mode=1/.test(c.sdpFmtpLine || '')));
        }
      }
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((r) => { pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); setTimeout(r, 3000); });
      const r = await fetch(`/api/live/${id}/whip`, { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${key}` }, body: pc.localDescription.sdp });
      if (r.status !== 201) throw new Error(`WHIP: HTTP ${r.status} ${await r.text()}`);
      await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
      return r.headers.get('Location');
    }, { id: stream.id, key: stream.key });
    const rec = await waitFor('the H.264 WHIP broadcast to be playable', async () => {
      const s = await api(`/api/live/${stream.id}`);
      if (!s.video_id || s.video_id === id) return false;
      const r = await api(`/api/videos/${s.video_id}`);
      if (r.status === 'failed') throw new Error(`failed: ${JSON.stringify(r.error)}`);
      return r.playable && r;
    }, 60000, 200);
    h264 = rec.id;
    const page = await context.newPage();
    try {
      await page.goto(`${BASE}/watch/${h264}`);
      await playsPast(page, 2, 60000);
    } finally {
      await page.close();
    }
    // WHIP's DELETE on the session ends it.
    const status = await client.evaluate(async ({ location, key }) => (await fetch(location, { method: 'DELETE', headers: { Authorization: `Bearer ${key}` } })).status, { location, key: stream.key });
    if (status !== 200) throw new Error(`DELETE of the WHIP session: HTTP ${status}`);
  } finally {
    await client.close();
  }
  const vod2 = await ready(h264, 120000);
  if (!/264/.test(vod2.source.video_codec)) throw new Error(`the H.264 client's broadcast has ${vod2.source.video_codec}`);
  console.log(`#   the H.264 client's broadcast: ${vod2.source.video_codec} + ${vod2.source.audio_codec}`);
}, liveContext);
await liveContext.close();

async function playsLowLatency(context, rec, query, want) {
  const page = await context.newPage();
  try {
    await page.goto(`${BASE}/watch/${rec.id}${query}`);
    const first = await playsPast(page, 0.5, 60000);
    const kind = await page.evaluate(() => window.cascadePlayer.kind);
    if (kind !== want) throw new Error(`the watch page chose ${kind}, not ${want}`);
    // From here on, every stall counts: hls.js's stall reports and the video element's waiting.
    const from = (await playsPast(page, first.t + 2, 60000)).t;
    await page.evaluate(() => {
      window.llWaits = [];
      const v = document.getElementById('video');
      v.addEventListener('waiting', () => window.llWaits.push(v.currentTime.toFixed(2)));
      window.llStallsFrom = window.cascadePlayer.stalls.length;
    });
    const latencies = [];
    await waitFor('60 s of low-latency playback', async () => {
      const s = await page.evaluate(() => ({ t: document.getElementById('video').currentTime, latency: window.cascadePlayer.latency(),
        errors: window.cascadePlayer.errors.slice(), stalls: window.cascadePlayer.stalls.slice(window.llStallsFrom), waits: window.llWaits.slice(),
        behind: document.getElementById('behind-live').textContent }));
      if (s.errors.length) throw new Error(`player errors: ${s.errors.join(' | ')}`);
      if (s.stalls.length || s.waits.length) throw new Error(`stalled at ${s.t.toFixed(2)} s: ${[...s.stalls, ...s.waits.map((w) => `waiting@${w}`)].join(' ')}`);
      if (!(s.latency > 0 && s.latency < 3 * LIVE_SEGMENT)) throw new Error(`latency ${s.latency} s is not within 3 segments`);
      latencies.push(s.latency);
      if (!/after the camera/.test(s.behind)) throw new Error(`the page does not say the latency: ${s.behind}`);
      return s.t > from + 60;
    }, 120000, 1000);
    latencies.sort((a, b) => a - b);
    const q = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))].toFixed(2);
    console.log(`#   ${kind}: 60 s from ${from.toFixed(1)} s, no stall; glass-to-glass p50 ${q(0.5)} s, p95 ${q(0.95)} s, max ${latencies[latencies.length - 1].toFixed(2)} s`);
  } finally {
    await page.close();
  }
}

await scenario('API reference: /api/docs shows every operation of /api/openapi.json', 60000, async (page) => {
  const spec = await (await fetch(`${BASE}/api/openapi.json`)).json();
  const operations = Object.values(spec.paths).reduce((n, ops) => n + Object.keys(ops).length, 0);
  await page.goto(`${BASE}/api/docs`);
  await page.waitForFunction((n) => document.querySelectorAll('.opblock').length === n, operations, { timeout: 30000 });
  const title = await page.locator('.info .title').first().textContent();
  if (!title.includes('Cascade')) throw new Error(`the page's title is ${title}`);
  await page.screenshot({ path: path.join(ART, 'api-docs.png') });
});

await scenario('no request leaves 127.0.0.1', 5000, async () => {
  if (foreign.length) throw new Error(`requests to other hosts: ${foreign.slice(0, 5).join(', ')}`);
});

await browser.close();
const failed = results.filter(([, e]) => e).length;
console.log(`${results.length - failed} passed, ${failed} failed${skipped ? `, ${skipped} skipped (not a full run: exit 2)` : ''}`);
process.exit(failed ? 1 : skipped ? 2 : 0);
