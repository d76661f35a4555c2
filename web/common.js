// Small helpers shared by the pages. No framework, no build step.
'use strict';

const Cascade = {
  async json(url, opts) {
    const r = await fetch(url, opts);
    let body = null;
    try { body = await r.json(); } catch (_) { /* empty body */ }
    if (!r.ok) {
      const err = new Error((body && body.message) || `${r.status} ${r.statusText}`);
      err.code = body && body.code;
      err.status = r.status;
      throw err;
    }
    return body;
  },
  // A JSON request (state-changing requests are same-origin, so the browser sends Origin).
  send(url, method, body) {
    const opts = { method };
    if (body !== undefined) {
      opts.headers = { 'Content-Type': 'application/json' };
      opts.body = JSON.stringify(body);
    }
    return Cascade.json(url, opts);
  },
  // "1.2 GB of 10 GB, 3 of 20 videos"; a missing quota (null) is unlimited.
  storage(s) {
    if (!s) return '–';
    const b = Number.isFinite(s.quota_bytes) ? `${Cascade.bytes(s.bytes)} of ${Cascade.bytes(s.quota_bytes)}` : Cascade.bytes(s.bytes);
    const n = Number.isFinite(s.quota_videos) ? `${s.videos} of ${s.quota_videos} videos` : `${s.videos} video${s.videos === 1 ? '' : 's'}`;
    const unlimited = !Number.isFinite(s.quota_bytes) && !Number.isFinite(s.quota_videos);
    return `${b}, ${n}${unlimited ? ' · unlimited' : ''}`;
  },
  // Playback URLs are relative unless the server has a public URL; players want absolute ones.
  abs(u) { return u ? new URL(u, window.location.href).href : u; },
  bytes(n) {
    if (!Number.isFinite(n)) return '–';
    const u = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return `${n.toFixed(n < 10 && i ? 1 : 0)} ${u[i]}`;
  },
  duration(s) {
    if (!Number.isFinite(s) || s <= 0) return '';
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = s % 60;
    return (h ? `${h}:${String(m).padStart(2, '0')}` : `${m}`) + `:${String(sec).padStart(2, '0')}`;
  },
  rate(bps) {
    return bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mbps` : `${Math.round(bps / 1e3)} kbps`;
  },
  ladder(v) {
    return (v.renditions || []).map((r) => r.name).join(' · ');
  },
  when(iso) {
    const d = new Date(iso);
    return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  },
  statusText(v) {
    // A resumable (tus) upload still receiving its bytes: `upload_bytes` says how far it is.
    if (v.status === 'uploading') return Number.isFinite(v.upload_bytes) ? `Uploading (${Cascade.bytes(v.upload_bytes)} received)` : 'Uploading';
    if (v.status === 'queued') return v.queue_position ? `Queued (#${v.queue_position})` : 'Queued';
    if (v.status === 'processing') return `Processing ${Math.round(v.progress * 100)} %${v.playable ? ' · playable' : ''}`;
    if (v.status === 'failed') return `Failed: ${v.error ? v.error.message : 'unknown error'}`;
    return 'Ready';
  },
  el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    }
    return e;
  },
  // Follows a video's Server-Sent Events; returns a function that stops following.
  follow(id, onRecord) {
    if (!window.EventSource) return () => {};
    const es = new EventSource(`/api/videos/${encodeURIComponent(id)}/events`);
    es.addEventListener('video', (e) => {
      const v = JSON.parse(e.data);
      onRecord(v);
      if (v.status === 'ready' || v.status === 'failed') es.close();
    });
    es.onerror = () => { /* the browser reconnects by itself; the stream ends after ready */ };
    return () => es.close();
  },
};
window.Cascade = Cascade;

// The header's account links: "[Admin] Account name · Log out", or "Log in" (back to this page
// afterwards). The account page has a Log out button of its own (#logout), so none here.
Cascade.me = Cascade.json('/api/me').catch(() => null);
document.addEventListener('DOMContentLoaded', async () => {
  const slot = document.getElementById('account');
  if (!slot) return;
  const me = await Cascade.me;
  if (me) {
    const link = (href, id, text) => Cascade.el('a', { href, id, 'aria-current': window.location.pathname === href ? 'page' : null }, text);
    if (me.role === 'admin') slot.append(link('/admin', 'nav-admin', 'Admin'));
    slot.append(link('/account', 'nav-account', 'Account'), Cascade.el('span', { class: 'who' }, me.username));
    if (!document.getElementById('logout')) {
      const out = Cascade.el('a', { href: '#', id: 'logout' }, 'Log out');
      out.addEventListener('click', async (e) => {
        e.preventDefault();
        await fetch('/api/session', { method: 'DELETE' });
        window.location.assign('/');
      });
      slot.append(out);
    }
  } else {
    const here = window.location.pathname + window.location.search;
    slot.append(Cascade.el('a', { href: `/login?next=${encodeURIComponent(here)}`, id: 'login' }, 'Log in'));
  }
});
