// Bench helper (not a test): plays a broadcast's watch page in Chromium and samples the player's
// own glass-to-glass latency every half second (hls.js: EXT-X-PROGRAM-DATE-TIME of the frame shown
// against the clock; dash.js: its live latency from the MPD's wall-clock mapping, synchronised with
// Cascade's /api/time), counting stalls (the video element's `waiting` and hls.js's stall reports).
// Usage: node bench/player_latency.mjs BASE VIDEO_ID QUERY SECONDS → one JSON line on stdout.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { chromium } = createRequire(path.join(root, 'web', 'package.json'))('playwright-core');
const [base, id, query, seconds] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
const out = { query, kind: null, samples: [], stalls: [], errors: [] };
try {
  const page = await browser.newPage();
  await page.goto(`${base}/watch/${id}${query}`);
  await page.waitForFunction(() => window.cascadePlayer && window.cascadePlayer.kind && document.getElementById('video').currentTime > 0.5,
    null, { timeout: 60000 });
  out.kind = await page.evaluate(() => window.cascadePlayer.kind);
  // Settled at its live delay: then every stall counts.
  await sleep(3000);
  await page.evaluate(() => {
    const v = document.getElementById('video');
    window.benchWaits = [];
    v.addEventListener('waiting', () => window.benchWaits.push(v.currentTime));
    window.benchStallsFrom = window.cascadePlayer.stalls.length;
  });
  const end = Date.now() + Number(seconds) * 1000;
  while (Date.now() < end) {
    await sleep(500);
    const s = await page.evaluate(() => ({ latency: window.cascadePlayer.latency ? window.cascadePlayer.latency() : NaN }));
    if (Number.isFinite(s.latency)) out.samples.push(s.latency);
  }
  const s = await page.evaluate(() => ({ waits: window.benchWaits.slice(), stalls: window.cascadePlayer.stalls.slice(window.benchStallsFrom),
    errors: window.cascadePlayer.errors.slice() }));
  out.stalls = [...s.stalls, ...s.waits.map((t) => `waiting@${t.toFixed(2)}`)];
  out.errors = s.errors;
} catch (e) {
  out.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
