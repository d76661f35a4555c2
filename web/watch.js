// Watch page: dash.js when the browser has MSE, hls.js as fallback, native HLS on Safari;
// ?player=dash|hls forces one. Plays the growing stream from its start while the video is still
// encoding and carries on into new segments without a reload. The embed player (/embed/{id},
// <body class="embed">) is the same page without the site around it.
'use strict';
(async () => {
  const $ = (id) => document.getElementById(id);
  const video = $('video');
  const id = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() || '');
  const state = { kind: null, errors: [], stalls: [], encoderWaits: 0, renditions: [], current: null, record: null };
  window.cascadePlayer = {
    get kind() { return state.kind; },
    errors: state.errors,
    // Stalls the player reported and recovered from by itself (not errors), e.g. at the encoder's edge.
    stalls: state.stalls,
    // How many times the page said it was waiting for the encoder.
    encoderWaits: () => state.encoderWaits,
    renditions: () => state.renditions.map((r) => r.name),
    current: () => state.current,
    record: () => state.record,
  };
  const embedded = document.body.classList.contains('embed');
  const fail = (msg) => { $('error').textContent = msg; $('error').hidden = false; };

  let v;
  try {
    v = await Cascade.json(`/api/videos/${encodeURIComponent(id)}`);
  } catch (e) {
    fail(e.status === 404 ? 'This video is not available: it does not exist, was deleted, or is private.' : `Cannot load the video: ${e.message}`);
    return;
  }
  document.title = `${v.title} · Cascade`;
  $('title').textContent = v.title;
  if (v.images && v.images.poster) video.poster = v.images.poster;

  const showRecord = (r) => {
    state.record = r;
    $('state').textContent = r.status;
    $('state').className = `badge ${r.status}`;
    $('state-text').textContent = r.status === 'ready' ? Cascade.ladder(r) : Cascade.statusText(r);
    const dur = r.source && r.source.duration_s;
    $('encoded').style.width = `${r.status === 'ready' ? 100 : Math.round(r.progress * 100)}%`;
    if (dur) $('scrub').setAttribute('aria-valuemax', Math.round(dur));
  };
  showRecord(v);

  // Share / Embed: the link, and an iframe of the embed player (not for private videos, which
  // an embed on another site cannot play).
  if (!embedded && v.visibility !== 'private') {
    const src = `${location.origin}/embed/${encodeURIComponent(id)}`;
    const esc = (t) => t.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
    $('share-link').value = `${location.origin}/watch/${encodeURIComponent(id)}`;
    $('share-embed').value = `<iframe src="${src}" width="640" height="360" title="${esc(v.title)}" frameborder="0" allow="autoplay; fullscreen; picture-in-picture" allowfullscreen></iframe>`;
    $('share-copy').addEventListener('click', async () => {
      $('share-embed').select();
      try { await navigator.clipboard.writeText($('share-embed').value); } catch (_) { document.execCommand('copy'); }
      $('share-done').hidden = false;
    });
    $('share').hidden = false;
  }

  // The owner and admins may change the title and visibility.
  if (!embedded) Cascade.me.then((me) => {
    if (!me || !(me.id === v.owner || me.role === 'admin')) return;
    const form = $('edit-form');
    $('edit-title').value = v.title;
    $('edit-visibility').value = v.visibility || 'public';
    form.hidden = false;
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      $('edit-done').hidden = true;
      $('edit-error').hidden = true;
      $('edit-save').disabled = true;
      try {
        const r = await Cascade.send(`/api/videos/${encodeURIComponent(id)}`, 'PATCH',
          { title: $('edit-title').value.trim(), visibility: $('edit-visibility').value });
        document.title = `${r.title} · Cascade`;
        $('title').textContent = r.title;
        $('edit-title').value = r.title;
        $('edit-visibility').value = r.visibility || $('edit-visibility').value;
        $('edit-done').hidden = false;
      } catch (err) {
        $('edit-error').textContent = `Not saved: ${err.message}`;
        $('edit-error').hidden = false;
      }
      $('edit-save').disabled = false;
    });
  });

  if (!v.playable) {
    if (v.status === 'failed') { fail(`This video could not be processed: ${v.error ? v.error.message : ''}`); return; }
    // Wait until the first segments are published, then start.
    await new Promise((resolve) => {
      Cascade.follow(id, (r) => { showRecord(r); if (r.playable) { v = r; resolve(); } });
    });
    v = await Cascade.json(`/api/videos/${encodeURIComponent(id)}`);
  }
  if (v.status !== 'ready') Cascade.follow(id, showRecord);

  // A broadcast on air starts at the live edge (a few segments behind it) and keeps up; the page
  // shows how far behind live it plays and offers to jump back there. Once the broadcast ends the
  // same video is a normal one.
  const onAir = () => !!(v.live && state.record && state.record.live && state.record.status === 'processing');
  const liveEdge = () => (video.seekable.length ? video.seekable.end(video.seekable.length - 1) : NaN);
  window.cascadePlayer.behindLive = () => liveEdge() - video.currentTime;
  if (v.live) {
    const showLive = () => {
      const live = onAir();
      const behind = liveEdge() - video.currentTime;
      $('live-badge').hidden = !live;
      $('behind-live').hidden = !live || !(behind >= 0);
      const latency = window.cascadePlayer.latency ? window.cascadePlayer.latency() : NaN;
      if (live && behind >= 0) $('behind-live').textContent = `${behind.toFixed(1)} s behind live` + (latency > 0 ? ` · ${latency.toFixed(1)} s after the camera` : '');
      $('jump-live').hidden = !live || !(behind > 3 * segmentSeconds);
    };
    $('jump-live').addEventListener('click', () => {
      const edge = liveEdge();
      if (edge > 0) video.currentTime = Math.max(0, edge - 2 * segmentSeconds);
      video.play().catch(() => {});
    });
    setInterval(showLive, 500);
  }

  // While the video is still encoding, playback that catches up with the encoder stops at the last
  // published segment until the next one is written: expected whenever encoding is slower than
  // real time. The players re-read the growing manifests and carry on by themselves; the page says
  // what it is waiting for. The published edge trails the encoder's position by up to about two
  // segments (a segment is published when the next one starts, plus the encoder's look-ahead and
  // the record's update steps), hence the margin.
  let segmentSeconds = v.live ? 2 : 4;
  if (!v.live) Cascade.json('/api/config').then((c) => { segmentSeconds = c.segment_seconds || segmentSeconds; }).catch(() => {});
  const encodedSeconds = () => {
    const r = state.record;
    if (!r || r.status === 'ready') return Infinity;
    return r.progress * ((r.source && r.source.duration_s) || 0);
  };
  const atEncoderEdge = (t) => state.record && state.record.status === 'processing' && encodedSeconds() - t < 2 * segmentSeconds + 2;
  let shownTime = -1;
  let shownMoved = Date.now();
  const showWaiting = () => {
    const t = video.currentTime;
    if (t !== shownTime || video.paused || video.ended) {
      shownTime = t;
      shownMoved = Date.now();
    }
    const stuck = !video.paused && !video.ended && (video.readyState < HTMLMediaElement.HAVE_FUTURE_DATA || Date.now() - shownMoved > 1000);
    const waiting = stuck && atEncoderEdge(t);
    const el = $('waiting');
    if (waiting && v.live) {
      el.textContent = 'Waiting for the broadcast…';
      if (el.hidden) state.encoderWaits += 1;
    } else if (waiting) {
      const dur = state.record.source && state.record.source.duration_s;
      el.textContent = `Waiting for the encoder… (${Cascade.duration(encodedSeconds()) || '0:00'}${dur ? ` of ${Cascade.duration(dur)}` : ''} encoded)`;
      if (el.hidden) state.encoderWaits += 1;
    }
    el.hidden = !waiting;
  };
  for (const ev of ['waiting', 'playing', 'pause', 'seeking', 'seeked', 'ended']) video.addEventListener(ev, showWaiting);
  setInterval(showWaiting, 250);

  // Names of renditions by size, from the record.
  const nameFor = (w, h) => {
    const r = (v.renditions || []).find((x) => x.width === w && x.height === h) ||
      (v.renditions || []).find((x) => x.height === h);
    return r ? r.name : `${Math.min(w, h)}p`;
  };
  const setCurrent = (name, bps) => {
    state.current = name;
    $('current-rendition').textContent = bps ? `${name} · ${Cascade.rate(bps)}` : name;
  };
  const fillMenu = (list, onPick) => {
    state.renditions = list;
    const sel = $('quality');
    sel.replaceChildren(Cascade.el('option', { value: 'auto' }, 'Auto'),
      ...list.map((r) => Cascade.el('option', { value: r.key }, `${r.name} (${Cascade.rate(r.bandwidth)})`)));
    sel.onchange = () => onPick(sel.value);
  };

  const forced = new URLSearchParams(location.search).get('player');
  const hasMse = !!(window.MediaSource || window.ManagedMediaSource);
  const nativeHls = video.canPlayType('application/vnd.apple.mpegurl') !== '';
  // A low-latency broadcast on air plays its LL-HLS playlists in hls.js's low-latency mode.
  const lowLatency = !!(v.live && v.status === 'processing' && v.playback.hls_low_latency && hasMse && window.Hls && Hls.isSupported());
  // ?player=lldash: its low-latency DASH in dash.js (low-latency mode from the MPD's
  // availabilityTimeOffset, target latency from its ServiceDescription).
  const lowLatencyDash = !!(v.live && v.status === 'processing' && v.playback.dash_low_latency && hasMse);
  const kind = forced === 'dash' || forced === 'hls' ? forced : forced === 'lldash' && lowLatencyDash ? 'lldash'
    : lowLatency ? 'llhls' : hasMse ? 'dash' : nativeHls ? 'native' : 'hls';

  if (kind === 'dash' || kind === 'lldash') {
    state.kind = kind;
    const dashUrl = Cascade.abs(kind === 'lldash' ? v.playback.dash_low_latency : v.playback.dash);
    const player = dashjs.MediaPlayer().create();
    player.updateSettings({
      debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING },
      streaming: kind === 'lldash' ? {
        liveCatchup: { enabled: true },
        abr: { autoSwitchBitrate: { video: true } },
      } : v.live ? {
        // A broadcast: play 3 s (1.5 segments) behind the live edge and speed up (at most 1.5x)
        // when behind. No seeking catch-up (maxDrift): under CPU load it seeked in a loop to a
        // position it never buffered.
        liveCatchup: { enabled: true, playbackRate: { min: -0.5, max: 0.5 } },
        delay: { liveDelay: 3 },
        // The live edge is the end of the SegmentTimeline, not the wall clock: an encoder that
        // falls behind real time (a loaded machine) must not send the player past what exists.
        timeShiftBuffer: { calcFromSegmentTimeline: true },
        abr: { autoSwitchBitrate: { video: true } },
      } : {
        // A growing (dynamic) MPD is played from its start, never pulled to the live edge.
        liveCatchup: { enabled: false },
        delay: { liveDelayFragmentCount: 1 },
        abr: { autoSwitchBitrate: { video: true } },
      },
    });
    player.on(dashjs.MediaPlayer.events.ERROR, (e) => state.errors.push(`dash: ${JSON.stringify(e.error || e)}`));
    player.on(dashjs.MediaPlayer.events.PLAYBACK_ERROR, (e) => state.errors.push(`dash playback: ${JSON.stringify(e.error || e)}`));
    player.on(dashjs.MediaPlayer.events.STREAM_INITIALIZED, () => {
      const reps = player.getRepresentationsByType('video').slice().sort((a, b) => b.bandwidth - a.bandwidth);
      fillMenu(reps.map((r) => ({ key: r.id, name: r.id, bandwidth: r.bandwidth })), (key) => {
        if (key === 'auto') {
          player.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: true } } } });
        } else {
          player.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: false } } } });
          player.setRepresentationForTypeById('video', key, true);
        }
      });
      const cur = player.getCurrentRepresentationForType('video');
      if (cur) setCurrent(cur.id, cur.bandwidth);
    });
    player.on(dashjs.MediaPlayer.events.QUALITY_CHANGE_RENDERED, (e) => {
      if (e.mediaType !== 'video') return;
      const cur = player.getCurrentRepresentationForType('video');
      if (cur) setCurrent(cur.id, cur.bandwidth);
    });
    if (v.live && v.status === 'processing') player.initialize(video, dashUrl, true);
    else player.initialize(video, dashUrl, true, 0);
    window.cascadePlayer.dash = player;
    // Glass-to-glass latency: dash.js maps media time to the wall clock (availabilityStartTime,
    // synchronised with Cascade's /api/time). The standard MPD's availabilityStartTime is one
    // segment before the first media (every listed segment counts as available), the
    // low-latency one's is the first media itself.
    const astLead = kind === 'lldash' ? 0 : segmentSeconds;
    if (v.live) window.cascadePlayer.latency = () => player.getCurrentLiveLatency() - astLead;
    // Stall watchdog: if playback makes no progress for 5 s while not paused and more video than
    // that is already encoded, the stream is loaded again at that position. dash.js has stopped for
    // good on the growing MPD with later segments listed, for a cause not pinned down. Waiting at
    // the encoder's edge does not trigger it (nothing more is encoded there), and each reload
    // doubles the wait before the next, so a slow network is not answered with a reload every 5 s.
    state.recoveries = 0;
    window.cascadePlayer.recoveries = () => state.recoveries;
    let lastTime = -1;
    let stuckSince = 0;
    // A broadcast on air is reloaded at its live edge the same way: dash.js has also stopped for
    // good there, at the end of what a young broadcast had published (seen under CPU load). A
    // publisher's reconnect gap costs at most a few reloads, each wait twice the last.
    setInterval(() => {
      const t = video.currentTime;
      const encoded = state.record ? encodedSeconds() : 0;
      const live = onAir();
      if (video.paused || video.seeking || video.ended || t !== lastTime || (!live && encoded < t + 5)) {
        lastTime = t;
        stuckSince = 0;
        return;
      }
      if (!stuckSince) stuckSince = Date.now();
      else if (Date.now() - stuckSince >= 5000 * 2 ** state.recoveries) {
        stuckSince = 0;
        state.recoveries += 1;
        if (live) {
          console.warn(`dash: no progress at ${t.toFixed(2)} s of the broadcast for ${5 * 2 ** (state.recoveries - 1)} s; reloading it at its live edge`);
          player.attachSource(dashUrl);
        } else {
          console.warn(`dash: no progress at ${t.toFixed(2)} s for ${5 * 2 ** (state.recoveries - 1)} s with ${encoded.toFixed(1)} s encoded; reloading the stream there`);
          player.attachSource(dashUrl, t);
        }
      }
    }, 1000);
  } else if ((kind === 'hls' || kind === 'llhls') && window.Hls && Hls.isSupported()) {
    state.kind = kind;
    // A broadcast plays 3 s behind the end of its playlist, speeds up (at most 1.5x) when behind
    // and jumps back when 6 s (3 segments) behind; an upload still encoding plays from its start.
    // Low latency: hls.js plays PART-HOLD-BACK behind the last part and loads parts as they are
    // published (blocking playlist reload).
    const hls = new Hls(kind === 'llhls'
      // No backBufferLength: hls.js 1.7's back-buffer flush at each new segment can, while a
      // part of the segment being loaded is in the transmuxer, drop that segment's tracker entry
      // (FragmentTracker.detectEvictedFragments), which then reads as "Found no media" and a GAP
      // (seen once in CI, at 96 s of a broadcast). The browser evicts played media by itself.
      ? { enableWorker: true, lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 }
      : v.live && v.status === 'processing'
      ? { enableWorker: true, liveSyncDuration: 3, liveMaxLatencyDuration: 6, maxLiveSyncPlaybackRate: 1.5 }
      : { startPosition: 0, enableWorker: true, liveDurationInfinity: false });
    // Glass-to-glass latency: the wall-clock time of the frame shown (EXT-X-PROGRAM-DATE-TIME)
    // against the clock.
    window.cascadePlayer.latency = () => (hls.playingDate ? (Date.now() - hls.playingDate.getTime()) / 1000 : NaN);
    // Non-fatal stall reports are hls.js saying it is waiting for data (at the encoder's edge, or on
    // a slow network) and nudging playback on; it recovers by itself, so they are not errors.
    const stallDetails = [Hls.ErrorDetails.BUFFER_STALLED_ERROR, Hls.ErrorDetails.BUFFER_NUDGE_ON_STALL, Hls.ErrorDetails.BUFFER_SEEK_OVER_HOLE];
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (!data.fatal && stallDetails.includes(data.details)) {
        state.stalls.push(`${data.details}@${video.currentTime.toFixed(2)}`);
        return;
      }
      if (data.fatal || data.type !== Hls.ErrorTypes.NETWORK_ERROR) {
        // Which resource and why, so a report (the browser test, the bench) says what failed.
        const frag = data.frag || {};
        const where = frag.sn === undefined ? '' : data.part ? `${frag.type} ${frag.sn}.${data.part.index}` : `${frag.type} ${frag.sn}`;
        const why = data.reason || (data.error && data.error.message) || '';
        state.errors.push(`hls: ${data.type} ${data.details}${where ? ` at ${where}` : ''}${why ? `: ${why}` : ''}`);
      }
      if (data.fatal && data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      const levels = hls.levels.map((l, i) => ({ key: String(i), name: nameFor(l.width, l.height), bandwidth: l.bitrate }))
        .sort((a, b) => b.bandwidth - a.bandwidth);
      fillMenu(levels, (key) => { hls.currentLevel = key === 'auto' ? -1 : Number(key); });
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (_, data) => {
      const l = hls.levels[data.level];
      if (l) setCurrent(nameFor(l.width, l.height), l.bitrate);
    });
    hls.loadSource(Cascade.abs(kind === 'llhls' ? v.playback.hls_low_latency : v.playback.hls));
    hls.attachMedia(video);
    window.cascadePlayer.hls = hls;
    video.play().catch(() => {});
  } else {
    state.kind = 'native';
    video.src = Cascade.abs(v.playback.hls);
    fillMenu((v.renditions || []).map((r) => ({ key: r.name, name: r.name, bandwidth: r.bandwidth })), () => {});
    video.play().catch(() => {});
  }
  $('player-kind').textContent = `· ${state.kind === 'dash' ? 'dash.js' : state.kind === 'hls' ? 'hls.js' : state.kind === 'llhls' ? 'hls.js, low latency' : state.kind === 'lldash' ? 'dash.js, low latency' : 'native HLS'}`;
  video.addEventListener('error', () => state.errors.push(`video element: ${video.error && video.error.message}`));

  // Seek bar with storyboard previews.
  const total = () => (v.source && v.source.duration_s) || video.duration || 0;
  const scrub = $('scrub'), preview = $('preview');
  let cues = [];
  if (v.images && v.images.storyboard) {
    fetch(v.images.storyboard).then((r) => r.text()).then((text) => {
      const base = v.images.storyboard.replace(/[^/]*$/, '');
      cues = text.split(/\n\n+/).map((block) => {
        const m = block.match(/([\d:.]+) --> ([\d:.]+)\s*\n(.*)#xywh=(\d+),(\d+),(\d+),(\d+)/);
        if (!m) return null;
        const t = (s) => s.split(':').reduce((a, x) => a * 60 + Number(x), 0);
        return { start: t(m[1]), end: t(m[2]), url: base + m[3].trim(), x: +m[4], y: +m[5], w: +m[6], h: +m[7] };
      }).filter(Boolean);
    }).catch(() => {});
  }
  const timeAt = (ev) => {
    const rect = scrub.getBoundingClientRect();
    return Math.min(Math.max((ev.clientX - rect.left) / rect.width, 0), 1) * total();
  };
  scrub.addEventListener('mousemove', (ev) => {
    const t = timeAt(ev);
    const cue = cues.find((c) => t >= c.start && t < c.end) || cues[cues.length - 1];
    $('preview-time').textContent = Cascade.duration(t) || '0:00';
    if (!cue) { preview.style.display = 'none'; return; }
    preview.style.display = 'block';
    preview.style.width = `${cue.w}px`;
    preview.style.height = `${cue.h}px`;
    preview.style.backgroundImage = `url("${cue.url}")`;
    preview.style.backgroundPosition = `-${cue.x}px -${cue.y}px`;
    const rect = scrub.getBoundingClientRect();
    preview.style.left = `${Math.min(Math.max(ev.clientX - rect.left, cue.w / 2), rect.width - cue.w / 2)}px`;
  });
  scrub.addEventListener('mouseleave', () => { preview.style.display = 'none'; });
  scrub.addEventListener('click', (ev) => { video.currentTime = timeAt(ev); });
  video.addEventListener('timeupdate', () => {
    const d = total();
    $('played').style.width = d ? `${Math.min(100, (video.currentTime / d) * 100)}%` : '0';
    scrub.setAttribute('aria-valuenow', Math.round(video.currentTime));
  });

  document.addEventListener('keydown', (e) => {
    if (e.target.closest('input, select, textarea, button')) return;
    if (e.key === ' ' || e.key === 'k') { e.preventDefault(); video.paused ? video.play() : video.pause(); }
    else if (e.key === 'ArrowLeft') { video.currentTime = Math.max(0, video.currentTime - 5); }
    else if (e.key === 'ArrowRight') { video.currentTime = video.currentTime + 5; }
    else if (e.key === 'f') { document.fullscreenElement ? document.exitFullscreen() : video.requestFullscreen && video.requestFullscreen(); }
  });
})();
