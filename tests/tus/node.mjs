// tus-js-client (the pinned copy in web/node_modules) under Node against a running Cascade: an
// upload paused at 40 % (abort keeps it on the server) and resumed from its URL, then checked:
// the server's file is byte-identical, the video becomes ready. Prints `ok - …`; exits 1 on failure.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(path.join(root, 'web', 'package.json'));
const tus = require('tus-js-client');
const { CASCADE_URL: BASE, CASCADE_TOKEN: TOKEN, CASCADE_CLIP: CLIP, CASCADE_DATA: DATA } = process.env;
const headers = { Authorization: `Bearer ${TOKEN}` };
const data = readFileSync(CLIP);
const chunkSize = 64 * 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function head(url) {
  const r = await fetch(url, { method: 'HEAD', headers: { ...headers, 'Tus-Resumable': '1.0.0' } });
  return r.status === 200 ? Number(r.headers.get('upload-offset')) : r.status;
}

try {
  let videoId = null;
  const first = new tus.Upload(data, {
    endpoint: `${BASE}/api/uploads`, headers, chunkSize, metadata: { filename: 'node.mp4', title: 'tus-js-client under Node' },
    onAfterResponse: (_req, res) => { videoId = res.getHeader('Cascade-Video-Id') || videoId; },
  });
  await new Promise((resolve, reject) => {
    let paused = false;
    first.options.onProgress = (sent, total) => {
      if (!paused && sent >= total * 0.4) { paused = true; first.abort().then(resolve, reject); }
    };
    first.options.onError = reject;
    first.options.onSuccess = () => reject(new Error('finished before it could be paused'));
    first.start();
  });
  const url = first.url;
  const cut = await head(url);
  if (!(cut > 0 && cut < data.length)) throw new Error(`after the pause the server has ${cut} of ${data.length} bytes`);
  await new Promise((resolve, reject) => {
    new tus.Upload(data, { endpoint: `${BASE}/api/uploads`, uploadUrl: url, headers, chunkSize, onError: reject, onSuccess: resolve }).start();
  });
  if (await head(url) !== 404) throw new Error('the finished upload still answers HEAD');
  const source = readFileSync(path.join(DATA, 'uploads', videoId, 'source'));
  const digest = (b) => createHash('sha256').update(b).digest('hex');
  if (digest(source) !== digest(data)) throw new Error('the server file differs from the one sent');
  const deadline = Date.now() + 180000;
  let v;
  while (Date.now() < deadline) {
    v = await (await fetch(`${BASE}/api/videos/${videoId}`, { headers })).json();
    if (v.status === 'ready' || v.status === 'failed') break;
    await sleep(250);
  }
  if (!v || v.status !== 'ready') throw new Error(`video ${videoId}: ${JSON.stringify(v && (v.error || v.status))}`);
  console.log(`ok - tus-js-client under Node: paused at ${Math.round((cut * 100) / data.length)} %, resumed, byte-identical, ready`);
} catch (e) {
  console.log(`not ok - tus-js-client under Node: ${e.message}`);
  process.exit(1);
}
