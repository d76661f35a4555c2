// Upload page: drag and drop, XHR upload with real progress, then live processing progress from
// SSE and a "Watch now" link the moment the video is playable.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const form = $('upload-form'), input = $('file'), drop = $('drop');
  let maxBytes = Infinity;
  const config = Cascade.json('/api/config').catch(() => ({}));
  config.then((c) => { if (Number.isFinite(c.max_upload_bytes)) maxBytes = c.max_upload_bytes; });

  const showError = (msg) => { $('error').textContent = msg; $('error').hidden = false; };
  const clearError = () => { $('error').hidden = true; };
  // Uploading needs an account: say so before a file is chosen, not after it is sent.
  Cascade.me.then((me) => {
    if (me) return;
    showError('Log in to upload videos.');
    form.querySelector('button[type=submit], button:not([type])')?.setAttribute('disabled', '');
    config.then((c) => {
      if (c.signup === 'open' && !$('error').hidden) {
        $('error').append(' No account? ', Cascade.el('a', { href: '/signup', id: 'signup-link' }, 'Sign up'), '.');
      }
    });
  });

  const describe = () => {
    const f = input.files[0];
    $('file-info').textContent = f ? `${f.name} · ${Cascade.bytes(f.size)}` : '';
  };
  input.addEventListener('change', describe);
  ['dragenter', 'dragover'].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add('over'); }));
  ['dragleave', 'drop'].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove('over'); }));
  drop.addEventListener('drop', (e) => {
    if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; describe(); }
  });

  function follow(id) {
    $('processing-panel').hidden = false;
    const link = $('watch-link');
    link.href = `/watch/${encodeURIComponent(id)}`;
    Cascade.follow(id, (v) => {
      $('processing-progress').value = Math.round(v.progress * 100);
      $('processing-status').textContent = Cascade.statusText(v);
      $('processing-ladder').textContent = Cascade.ladder(v);
      if (v.playable) { link.hidden = false; $('watch-hint').hidden = true; }
      if (v.status === 'failed') showError(`This file could not be processed: ${v.error ? v.error.message : 'unknown error'} (${v.error ? v.error.code : ''})`);
    });
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    clearError();
    const f = input.files[0];
    if (!f) { showError('Choose a video file first.'); return; }
    if (f.size > maxBytes) { showError(`This file is ${Cascade.bytes(f.size)}; the limit is ${Cascade.bytes(maxBytes)}.`); return; }
    const data = new FormData();
    data.append('title', $('title').value);
    data.append('file', f);
    const xhr = new XMLHttpRequest();
    // Our own reference for this upload: a streamable file is processing (and may be playable)
    // while it is still uploading, long before the response tells us its id.
    const ref = (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`).replace(/[^A-Za-z0-9-]/g, '');
    let following = null;
    const poll = setInterval(async () => {
      if (following) return;
      try {
        const { videos } = await Cascade.json(`/api/videos?ref=${encodeURIComponent(ref)}`);
        if (videos.length && !following) { following = videos[0].id; follow(following); }
      } catch (_) { /* keep uploading */ }
    }, 1000);
    xhr.addEventListener('loadend', () => clearInterval(poll));
    xhr.open('POST', `/api/videos?ref=${encodeURIComponent(ref)}`);
    xhr.responseType = 'json';
    $('submit').disabled = true;
    $('upload-panel').hidden = false;
    const started = performance.now();
    xhr.upload.onprogress = (ev) => {
      if (!ev.lengthComputable) return;
      const pct = (ev.loaded / ev.total) * 100;
      const secs = (performance.now() - started) / 1000;
      const speed = ev.loaded / Math.max(secs, 0.001);
      $('upload-progress').value = pct;
      $('upload-percent').textContent = `${Math.floor(pct)} %`;
      $('upload-bytes').textContent = `${Cascade.bytes(ev.loaded)} of ${Cascade.bytes(ev.total)}`;
      $('upload-speed').textContent = `${Cascade.bytes(speed)}/s`;
      $('upload-eta').textContent = speed > 0 && pct < 100 ? `${Cascade.duration((ev.total - ev.loaded) / speed) || '<1 s'} left` : '';
    };
    xhr.onload = () => {
      $('submit').disabled = false;
      const body = xhr.response || {};
      if (xhr.status === 201 && body.id) {
        $('upload-progress').value = 100;
        $('upload-percent').textContent = '100 %';
        $('upload-eta').textContent = 'done';
        if (following !== body.id) { following = body.id; follow(body.id); }
      } else {
        showError(body.message ? `Upload refused: ${body.message}` : `Upload failed (HTTP ${xhr.status}).`);
      }
    };
    xhr.onerror = () => {
      $('submit').disabled = false;
      showError('The upload was interrupted. If the file is very large, it may be over the server limit.');
    };
    xhr.send(data);
  });
})();
