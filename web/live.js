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
