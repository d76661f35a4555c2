// Library: every video, live; broadcasts on air in a "Live now" row above the rest. Cards are
// re-rendered only when their record changed.
'use strict';
(() => {
  const grid = document.getElementById('library');
  const liveGrid = document.getElementById('live-now');
  const cards = new Map();
  const onAir = (v) => v.live && v.status === 'processing';

  function card(v) {
    const thumb = Cascade.el('div', { class: 'thumb' },
      v.images && v.images.thumbnail
        ? Cascade.el('img', { src: v.images.thumbnail, alt: '', loading: 'lazy', class: 'thumbnail' })
        : (v.status === 'failed' ? '✕' : '…'),
      v.source && v.source.duration_s ? Cascade.el('span', { class: 'duration' }, Cascade.duration(v.source.duration_s)) : null);
    const busy = !onAir(v) && (v.status === 'processing' || v.status === 'queued');
    const del = Cascade.el('button', {
      class: 'danger', type: 'button', 'aria-label': `Delete ${v.title}`,
      onclick: async () => {
        if (!confirm(`Delete “${v.title}” and all its files?`)) return;
        try { await fetch(`/api/videos/${encodeURIComponent(v.id)}`, { method: 'DELETE' }); } finally { refresh(); }
      },
    }, 'Delete');
    return Cascade.el('article', { class: 'card', 'data-id': v.id },
      v.playable ? Cascade.el('a', { href: `/watch/${v.id}`, tabindex: -1 }, thumb) : thumb,
      Cascade.el('div', { class: 'body' },
        Cascade.el('div', { class: 'title' }, v.title),
        Cascade.el('div', {}, onAir(v) ? Cascade.el('span', { class: 'badge live' }, 'Live') : Cascade.el('span', { class: `badge ${v.status}` }, v.status), ' ',
          Cascade.el('span', { class: 'muted' }, busy || v.status === 'failed' ? Cascade.statusText(v) : Cascade.ladder(v))),
        busy ? Cascade.el('progress', { max: 100, value: Math.round(v.progress * 100) }) : null,
        Cascade.el('div', { class: 'muted' }, Cascade.when(v.created_at),
          v.source ? ` · ${v.source.width}×${v.source.height}` : ''),
        Cascade.el('div', { class: 'actions' },
          v.playable ? Cascade.el('a', { class: 'button watch', href: `/watch/${v.id}` }, 'Watch') : Cascade.el('span'),
          del)));
  }

  function signature(v) {
    return JSON.stringify([v.title, v.status, v.live, v.progress, v.playable, v.queue_position, v.renditions.length, v.images && Object.keys(v.images).length, v.error]);
  }

  async function refresh() {
    try {
      const { videos } = await Cascade.json('/api/videos');
      document.getElementById('error').hidden = true;
      const seen = new Set();
      const place = (list, into) => list.forEach((v, i) => {
        seen.add(v.id);
        const sig = signature(v);
        let entry = cards.get(v.id);
        if (!entry || entry.sig !== sig) {
          const node = card(v);
          if (entry) entry.node.replaceWith(node);
          entry = { node, sig };
          cards.set(v.id, entry);
        }
        if (into.children[i] !== entry.node) into.insertBefore(entry.node, into.children[i] || null);
      });
      const live = videos.filter(onAir);
      place(live, liveGrid);
      place(videos.filter((v) => !onAir(v)), grid);
      document.getElementById('live-now-section').hidden = live.length === 0;
      for (const [id, entry] of cards) {
        if (!seen.has(id)) { entry.node.remove(); cards.delete(id); }
      }
      document.getElementById('empty').hidden = videos.length > 0;
    } catch (e) {
      const err = document.getElementById('error');
      err.textContent = `Cannot load the library: ${e.message}`;
      err.hidden = false;
    }
  }
  refresh();
  setInterval(refresh, 2000);
})();
