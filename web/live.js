// Go live: the caller's live streams, each with the server URL and stream key for OBS (the key
// hidden until asked), copy buttons, its status (refreshed every 2 s), its settings and a preview
// of the broadcast on air.
'use strict';
(async () => {
  const $ = (id) => document.getElementById(id);
  const { el } = Cascade;
  const fail = (msg) => { $('error').textContent = msg; $('error').hidden = false; };
  const panels = new Map();

  const copyButton = (label, text) => {
    const b = el('button', { type: 'button', class: 'secondary copy' }, label);
    b.addEventListener('click', async () => {
      try { await navigator.clipboard.writeText(text()); b.textContent = 'Copied'; } catch (_) { b.textContent = 'Select and copy by hand'; }
      setTimeout(() => { b.textContent = label; }, 1500);
    });
    return b;
  };

  // One stream's panel; `update` refreshes what changes without touching the key's visibility.
  function panel(s) {
    let stream = s;
    const status = el('span', { class: 'badge' });
    const statusText = el('span', { class: 'muted' });
    const key = el('code', { class: 'key' }, '••••••••••••••••');
    let shown = false;
    const showKey = el('button', { type: 'button', class: 'secondary' }, 'Show key');
    showKey.addEventListener('click', () => {
      shown = !shown;
      key.textContent = shown ? stream.key : '••••••••••••••••';
      showKey.textContent = shown ? 'Hide key' : 'Show key';
    });
    const rotate = el('button', { type: 'button', class: 'secondary' }, 'New key');
    rotate.addEventListener('click', async () => {
      if (!confirm('Make a new stream key? The current one stops working at once.')) return;
      try { update(await Cascade.send(`/api/live/${encodeURIComponent(stream.id)}/key`, 'POST')); } catch (e) { fail(e.message); }
    });
    const del = el('button', { type: 'button', class: 'danger' }, 'Delete');
    del.addEventListener('click', async () => {
      if (!confirm(`Delete “${stream.title}”? A broadcast on air ends (its video is kept).`)) return;
      try { await Cascade.send(`/api/live/${encodeURIComponent(stream.id)}`, 'DELETE'); node.remove(); panels.delete(stream.id); } catch (e) { fail(e.message); }
    });
    // Settings for the next broadcasts: the reconnect window and the tallest rendition.
    const windowInput = el('input', { type: 'number', class: 'reconnect-window', min: 0, max: 3600, step: 1, required: true });
    const capSelect = el('select', { class: 'max-height' },
      [0, 2160, 1440, 1080, 720, 480, 360].map((h) => el('option', { value: h }, h ? `${h}p` : 'The whole ladder')));
    const lowLatency = el('input', { type: 'checkbox', class: 'low-latency' });
    const saved = el('span', { class: 'muted', role: 'status' });
    const settings = el('form', { class: 'settings' },
      el('label', {}, 'Reconnect window (seconds) ', windowInput), ' ',
      el('label', {}, 'Tallest rendition ', capSelect), ' ',
      el('label', { title: 'Low-Latency HLS: viewers about 1–2 s behind the camera instead of 3–4 s' }, lowLatency, ' Low latency'), ' ',
      el('button', { type: 'submit', class: 'secondary' }, 'Save settings'), ' ', saved);
    const showSettings = () => {
      windowInput.value = String(stream.reconnect_window_s);
      capSelect.value = String(stream.max_height || 0);
      lowLatency.checked = stream.low_latency !== false;
    };
    settings.addEventListener('submit', async (e) => {
      e.preventDefault();
      saved.textContent = '';
      try {
        update(await Cascade.send(`/api/live/${encodeURIComponent(stream.id)}`, 'PATCH',
          { reconnect_window_s: Number(windowInput.value), max_height: Number(capSelect.value), low_latency: lowLatency.checked }));
        showSettings();
        saved.textContent = 'Saved: they apply from the next broadcast.';
      } catch (err) { fail(`Settings not saved: ${err.message}`); }
    });
    showSettings();
    // Going live from this browser (WHIP): camera and microphone, previewed here, sent with
    // WebRTC; the readout is how late the broadcast's own player (the preview below) shows it.
    const camera = el('video', { class: 'camera', playsinline: '', hidden: '' });
    camera.muted = true;
    const goBrowser = el('button', { type: 'button', class: 'go-browser' }, 'Go live from this browser');
    const stopBrowser = el('button', { type: 'button', class: 'danger stop-browser', hidden: '' }, 'Stop');
    const latency = el('span', { class: 'muted latency', role: 'status' });
    let webrtc = null;
    const endWebrtc = () => {
      if (!webrtc) return;
      webrtc.pc.close();
      webrtc.media.getTracks().forEach((t) => t.stop());
      webrtc = null;
      camera.srcObject = null;
      camera.hidden = true;
      goBrowser.hidden = false;
      stopBrowser.hidden = true;
      latency.textContent = '';
    };
    goBrowser.addEventListener('click', async () => {
      goBrowser.disabled = true;
      let media = null, pc = null;
      try {
        media = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } }, audio: true });
        camera.srcObject = media;
        camera.hidden = false;
        camera.play().catch(() => {});
        pc = new RTCPeerConnection();
        for (const t of media.getTracks()) {
          // The camera's resolution from the first frame (the broadcast's ladder is chosen from
          // it), at up to 2.5 Mb/s: a WebRTC sender otherwise starts small and grows.
          const sendEncodings = t.kind === 'video' ? [{ maxBitrate: 2500000 }] : undefined;
          const tr = pc.addTransceiver(t, { direction: 'sendonly', streams: [media], sendEncodings });
          if (t.kind === 'video') {
            const p = tr.sender.getParameters();
            p.degradationPreference = 'maintain-resolution';
            await tr.sender.setParameters(p).catch(() => {});
          }
        }
        await pc.setLocalDescription(await pc.createOffer());
        // No trickle ICE: the offer goes with every candidate (or what 3 s gathered).
        await new Promise((resolve) => {
          if (pc.iceGatheringState === 'complete') { resolve(); return; }
          pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') resolve(); });
          setTimeout(resolve, 3000);
        });
        const r = await fetch(`/api/live/${encodeURIComponent(stream.id)}/whip`, {
          method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${stream.key}` }, body: pc.localDescription.sdp,
        });
        if (r.status !== 201) throw new Error((await r.json().catch(() => ({}))).message || `HTTP ${r.status}`);
        const location = r.headers.get('Location');
        // Start near the target rate rather than at the browser's cautious default.
        const answer = (await r.text()).replace(/^(a=fmtp:\d+ .*)$/gm, (l) => (/apt=/.test(l) || /opus/i.test(l) ? l : `${l};x-google-start-bitrate=1500`));
        await pc.setRemoteDescription({ type: 'answer', sdp: answer });
        webrtc = { pc, media, location };
        pc.addEventListener('connectionstatechange', () => { if (['failed', 'closed'].includes(pc.connectionState)) endWebrtc(); });
        goBrowser.hidden = true;
        stopBrowser.hidden = false;
      } catch (e) {
        if (pc) pc.close();
        if (media) media.getTracks().forEach((t) => t.stop());
        camera.hidden = true;
        fail(`Cannot go live from this browser: ${e.message}`);
      }
      goBrowser.disabled = false;
    });
    stopBrowser.addEventListener('click', async () => {
      const w = webrtc;
      if (!w) return;
      try { await fetch(w.location, { method: 'DELETE', headers: { Authorization: `Bearer ${stream.key}` } }); } catch (_) { /* the connection's end ends it too */ }
      endWebrtc();
    });
    setInterval(() => {
      const frame = preview.querySelector('iframe');
      const player = webrtc && frame && frame.contentWindow && frame.contentWindow.cascadePlayer;
      const s = player && player.latency ? player.latency() : NaN;
      latency.textContent = webrtc ? (s > 0 ? `Viewers see you ${s.toFixed(1)} s after the camera.` : 'Connecting…') : '';
    }, 1000);
    const browserLive = el('div', { class: 'browser-live' }, el('p', {}, goBrowser, ' ', stopBrowser, ' ', latency), camera);
    const preview = el('div', { class: 'preview-live' });
    let previewOf = null;
    const srt = stream.srt_url ? el('p', {}, 'SRT (MPEG-TS): ', el('code', {}, stream.srt_url.replace(/streamid=.*/, 'streamid=…')), ' ',
      copyButton('Copy SRT URL', () => stream.srt_url)) : null;
    const node = el('section', { class: 'panel stream', 'data-id': stream.id },
      el('h2', {}, stream.title, ' ', status), statusText,
      el('p', {}, 'Server: ', el('code', {}, stream.rtmp_url || 'RTMP is off on this server'), ' ', stream.rtmp_url ? copyButton('Copy server', () => stream.rtmp_url) : null),
      el('p', {}, 'Stream key: ', key, ' ', showKey, ' ', copyButton('Copy key', () => stream.key)),
      srt,
      el('p', { class: 'muted' }, 'OBS: Settings → Stream → Service “Custom…”, Server and Stream Key as above. ',
        'Settings → Output: H.264 (x264 or hardware), keyframe interval 2 s, AAC audio.'),
      settings,
      browserLive,
      preview,
      el('p', { class: 'actions' }, rotate, ' ', del));
    function update(next) {
      stream = next;
      if (shown) key.textContent = stream.key;
      status.textContent = stream.status;
      status.className = `badge ${stream.status === 'live' ? 'live' : stream.status === 'reconnecting' ? 'processing' : ''}`;
      statusText.textContent = stream.status === 'live' ? 'On air.' : stream.status === 'reconnecting'
        ? 'The publisher left; waiting for it to come back.' : stream.last_error ? `Last broadcast: ${stream.last_error.message}` : 'Waiting for a publisher.';
      if (stream.status !== 'idle' && stream.dropped_renditions && stream.dropped_renditions.length) {
        statusText.textContent += ` This server could not encode every rendition in real time: ${stream.dropped_renditions.join(', ')} dropped for the rest of the broadcast.`;
      }
      const want = stream.status !== 'idle' && stream.video_id ? stream.video_id : null;
      if (want !== previewOf) {
        previewOf = want;
        preview.replaceChildren(...(want ? [
          el('iframe', { src: `/embed/${encodeURIComponent(want)}`, title: 'Preview', width: 480, height: 270, allow: 'autoplay; fullscreen' }),
          el('p', {}, el('a', { href: `/watch/${encodeURIComponent(want)}` }, 'Watch page')),
        ] : stream.video_id ? [el('p', {}, el('a', { href: `/watch/${encodeURIComponent(stream.video_id)}` }, 'Last broadcast'))] : []));
      }
    }
    update(stream);
    return { node, update };
  }

  async function refresh() {
    let list;
    try {
      list = await Cascade.json('/api/live');
    } catch (e) {
      if (e.status === 401) { window.location.replace('/login?next=/live'); return; }
      fail(`Cannot load your live streams: ${e.message}`);
      return;
    }
    $('error').hidden = true;
    for (const s of list) {
      let p = panels.get(s.id);
      if (!p) { p = panel(s); panels.set(s.id, p); $('streams').append(p.node); } else p.update(s);
    }
    $('none').hidden = list.length > 0;
  }

  $('new-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    $('new-button').disabled = true;
    try {
      const title = $('new-title').value.trim();
      await Cascade.send('/api/live', 'POST', { ...(title ? { title } : {}), visibility: $('new-visibility').value });
      $('new-form').reset();
      await refresh();
    } catch (err) {
      fail(`Not created: ${err.message}`);
    }
    $('new-button').disabled = false;
  });
  await refresh();
  setInterval(refresh, 2000);
})();
