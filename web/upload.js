// Upload page: drag and drop, a resumable tus 1.0.0 upload to /api/uploads (tus-js-client, served
// at /vendor/tus.min.js) with real progress, pause/resume and resume after a reload, then live
// processing progress from SSE and a "Watch now" link the moment the video is playable.
// Without JavaScript, or in a browser tus-js-client does not support, the form posts the file as
// multipart to /api/videos instead.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const form = $('upload-form'), input = $('file'), drop = $('drop');
  let maxBytes = Infinity;
  let visibilityTouched = false;
  $('visibility').addEventListener('change', () => { visibilityTouched = true; });
  const config = Cascade.json('/api/config').catch(() => ({}));
  config.then((c) => {
    if (Number.isFinite(c.max_upload_bytes)) maxBytes = c.max_upload_bytes;
    // The server's default visibility, if it tells us; "public" otherwise.
    const sel = $('visibility');
    if (!visibilityTouched && [...sel.options].some((o) => o.value === c.default_visibility)) sel.value = c.default_visibility;
  });

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

  // Processing: the video's events, from the moment its id is known (the upload's creation).
  let followed = null, stopFollowing = null;
  function follow(id) {
    if (followed === id) return;
    if (stopFollowing) stopFollowing();
    followed = id;
    const link = $('watch-link');
    link.href = `/watch/${encodeURIComponent(id)}`;
    stopFollowing = Cascade.follow(id, (v) => {
      // Still receiving its bytes and not transcoded yet: nothing to show but the upload itself.
      if (v.status !== 'uploading' || v.playable) $('processing-panel').hidden = false;
      $('processing-progress').value = Math.round(v.progress * 100);
      $('processing-status').textContent = Cascade.statusText(v);
      $('processing-ladder').textContent = Cascade.ladder(v);
      if (v.playable) { link.hidden = false; $('watch-hint').hidden = true; }
      if (v.status === 'failed') showError(`This file could not be processed: ${v.error ? v.error.message : 'unknown error'} (${v.error ? v.error.code : ''})`);
    });
  }
  function unfollow() {
    if (stopFollowing) stopFollowing();
    followed = null;
    stopFollowing = null;
    $('processing-panel').hidden = true;
    $('watch-link').hidden = true;
    $('watch-hint').hidden = false;
  }

  // The upload's state: 'uploading', 'retrying', 'paused', 'stopped' (gave up, resumable), 'done'.
  let upload = null, phase = 'done';
  const setState = (text) => { $('upload-state').textContent = text; };
  const setPhase = (p) => {
    phase = p;
    $('pause').hidden = !(p === 'uploading' || p === 'retrying');
    $('resume').hidden = !(p === 'paused' || p === 'stopped');
    $('submit').disabled = p !== 'done';
  };

  let countdown = null;
  const stopCountdown = () => { clearInterval(countdown); countdown = null; };
  function retrying(ms) {
    stopCountdown();
    let left = Math.ceil(ms / 1000);
    const show = () => setState(left > 0 ? `Retrying in ${left} s…` : 'Retrying…');
    show();
    if (left > 0) countdown = setInterval(() => { left -= 1; show(); if (left <= 0) stopCountdown(); }, 1000);
  }

  // Speed and ETA from the bytes sent since the upload (re)started: a resumed upload's first
  // bytes were sent by an earlier page, a paused one's before the pause.
  let since = null;
  function progress(sent, total) {
    const now = performance.now();
    if (!since) since = { bytes: sent, t: now };
    if (phase === 'retrying') { stopCountdown(); setPhase('uploading'); setState('Uploading'); }
    const pct = total ? (sent / total) * 100 : 0;
    const secs = (now - since.t) / 1000;
    const speed = secs > 0 ? (sent - since.bytes) / secs : 0;
    $('upload-progress').value = pct;
    $('upload-percent').textContent = `${Math.floor(pct)} %`;
    $('upload-bytes').textContent = `${Cascade.bytes(sent)} of ${Cascade.bytes(total)}`;
    $('upload-speed').textContent = speed > 0 ? `${Cascade.bytes(speed)}/s` : '';
    $('upload-eta').textContent = speed > 0 && pct < 100 ? `${Cascade.duration((total - sent) / speed) || '<1 s'} left` : '';
  }

  // tus-js-client's own rule (network errors, 5xx, 409 wrong offset, 423 locked; not when offline).
  const retryable = (status) => (status < 400 || status >= 500 || status === 409 || status === 423);

  // The service's JSON error {code, message}, else tus-js-client's message.
  function reason(err) {
    const res = err.originalResponse;
    if (!res) return err.originalRequest ? 'The connection to the server was lost.' : err.message;
    try {
      const body = JSON.parse(res.getBody());
      if (body && body.message) return body.message;
    } catch (_) { /* not JSON */ }
    return err.message;
  }

  function start(resumed) {
    since = null;
    setPhase('uploading');
    setState(resumed ? 'Resuming an earlier upload of this file' : 'Uploading');
    upload.start();
  }

  form.addEventListener('submit', (e) => {
    // No tus here: let the browser post the form (multipart, answered with a redirect).
    if (!window.tus || !tus.isSupported) return;
    e.preventDefault();
    if (phase !== 'done') return;
    clearError();
    const f = input.files[0];
    if (!f) { showError('Choose a video file first.'); return; }
    if (f.size > maxBytes) { showError(`This file is ${Cascade.bytes(f.size)}; the limit is ${Cascade.bytes(maxBytes)}.`); return; }
    unfollow();
    $('upload-panel').hidden = false;
    progress(0, f.size);
    upload = new tus.Upload(f, {
      endpoint: '/api/uploads',
      // 64 MiB a PATCH: the server makes each PATCH durable when it ends, so a cut connection (or a
      // pause, or a closed tab) loses at most the chunk in flight, and fewer requests cost less.
      chunkSize: 64 * 1024 * 1024,
      retryDelays: [0, 1000, 3000, 5000, 10000, 20000],
      metadata: { filename: f.name, filetype: f.type, title: $('title').value, visibility: $('visibility').value },
      // The fingerprint (in localStorage) is what lets a reload resume; a finished upload needs none.
      removeFingerprintOnSuccess: true,
      onProgress: progress,
      onAfterResponse: (req, res) => {
        // The creation (201) and every HEAD name the video: follow it from now on.
        const id = res.getHeader('Cascade-Video-Id');
        if (id) follow(id);
        // The earlier upload was gone (expired, finished, someone else's): this one starts afresh.
        if (req.getMethod() === 'POST' && res.getStatus() === 201 && phase === 'uploading') setState('Uploading');
      },
      onShouldRetry: (err, attempt, options) => {
        const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
        if (!retryable(status) || navigator.onLine === false) return false;
        setPhase('retrying');
        retrying(options.retryDelays[attempt]);
        return true;
      },
      onError: (err) => {
        stopCountdown();
        $('upload-speed').textContent = '';
        $('upload-eta').textContent = '';
        const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
        if (status === 401) {
          setPhase('done');
          setState('');
          showError('Log in to upload videos.');
          return;
        }
        if (retryable(status)) {
          // Out of retries (or offline): what the server has stays, Resume goes on from there.
          setPhase('stopped');
          setState(navigator.onLine === false ? 'Offline: the upload goes on when the connection is back' : 'Interrupted: press Resume to go on');
          showError(reason(err));
          return;
        }
        setPhase('done');
        setState('');
        showError(`Upload refused: ${reason(err)}`);
      },
      onSuccess: () => {
        stopCountdown();
        setPhase('done');
        setState('Uploaded');
        $('upload-progress').value = 100;
        $('upload-percent').textContent = '100 %';
        $('upload-eta').textContent = 'done';
      },
    });
    setPhase('uploading');
    setState('');
    // A file already partly sent (same file, same browser, even after a restart) goes on from
    // the server's offset rather than from the start.
    upload.findPreviousUploads()
      .then((prev) => {
        prev.sort((a, b) => String(b.creationTime).localeCompare(String(a.creationTime)));
        if (prev.length) upload.resumeFromPreviousUpload(prev[0]);
        start(prev.length > 0);
      })
      .catch(() => start(false));
  });

  // Pause keeps the upload on the server (abort without terminating); Resume asks it the offset.
  $('pause').addEventListener('click', () => {
    if (!upload || !(phase === 'uploading' || phase === 'retrying')) return;
    stopCountdown();
    upload.abort();
    setPhase('paused');
    setState('Paused');
    $('upload-speed').textContent = '';
    $('upload-eta').textContent = '';
  });
  const resume = () => {
    if (!upload || !(phase === 'paused' || phase === 'stopped')) return;
    clearError();
    start(false);
  };
  $('resume').addEventListener('click', resume);
  window.addEventListener('online', () => { if (phase === 'stopped') resume(); });
})();
