// Bench helper (not a test): goes live over WHIP from Chromium's fake camera and microphone
// (640x360, H.264 or VP8 as Chromium prefers: VP8), as the Go live page does, for SECONDS, then
// ends the broadcast with DELETE. Usage: node bench/whip_publish.mjs BASE STREAM_ID KEY SECONDS
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { chromium } = createRequire(path.join(root, 'web', 'package.json'))('playwright-core');
const [base, id, key, seconds] = process.argv.slice(2);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
});
let status = 1;
try {
  const page = await browser.newPage();
  await page.goto(`${base}/healthz`);
  const location = await page.evaluate(async ({ id, key }) => {
    const media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360, frameRate: 30 }, audio: true });
    const pc = new RTCPeerConnection();
    window.whip = { pc, media };
    for (const t of media.getTracks()) {
      const tr = pc.addTransceiver(t, { direction: 'sendonly', streams: [media], sendEncodings: t.kind === 'video' ? [{ maxBitrate: 1500000 }] : undefined });
      if (t.kind === 'video') {
        const p = tr.sender.getParameters();
        p.degradationPreference = 'maintain-resolution';
        await tr.sender.setParameters(p).catch(() => {});
      }
    }
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((r) => { pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); setTimeout(r, 3000); });
    const r = await fetch(`/api/live/${id}/whip`, { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${key}` }, body: pc.localDescription.sdp });
    if (r.status !== 201) throw new Error(`WHIP: HTTP ${r.status} ${await r.text()}`);
    await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
    return r.headers.get('Location');
  }, { id, key });
  console.log(`live: ${location}`);
  await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
  await page.evaluate(async ({ location, key }) => { await fetch(location, { method: 'DELETE', headers: { Authorization: `Bearer ${key}` } }); }, { location, key });
  status = 0;
} catch (e) {
  console.error(String(e));
} finally {
  await browser.close();
}
process.exit(status);
