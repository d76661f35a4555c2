// Admin page: users (role, disabled, quotas), creating users, invite links.
'use strict';
(async () => {
  const $ = (id) => document.getElementById(id);
  const { el } = Cascade;
  const show = (id, msg) => { $(id).textContent = msg; $(id).hidden = false; };
  const GB = 1e9; // as Cascade.bytes counts

  let me;
  try {
    me = await Cascade.json('/api/me');
  } catch (err) {
    if (err.status === 401) { window.location.replace('/login?next=/admin'); return; }
    show('error', `Cannot load your account: ${err.message}`);
    return;
  }
  if (me.role !== 'admin') { $('not-admin').hidden = false; return; }
  $('admin-content').hidden = false;
  Cascade.json('/api/config').then((c) => { $('invite-note').hidden = c.signup !== 'closed'; }).catch(() => {});

  // A quota input's value: null when empty (the server's default), else a whole number >= 0, or NaN.
  const quota = (input, scale) => {
    const s = input.value.trim();
    if (!s) return input.validity.badInput ? NaN : null;
    const n = Number(s);
    return Number.isFinite(n) && n >= 0 ? Math.round(n * scale) : NaN;
  };
  const gb = (bytes) => (Number.isFinite(bytes) ? String(parseFloat((bytes / GB).toPrecision(10))) : '');

  const row = (u) => {
    const s = u.storage || {};
    const role = el('select', { class: 'role', 'aria-label': `Role of ${u.username}` },
      el('option', { value: 'uploader' }, 'Uploader'), el('option', { value: 'admin' }, 'Administrator'));
    role.value = u.role;
    const disabled = el('input', { type: 'checkbox', class: 'disabled', checked: !!u.disabled, 'aria-label': `Disable ${u.username}` });
    const qBytes = el('input', { type: 'number', class: 'quota-bytes', min: '0', step: 'any', placeholder: 'unlimited',
      value: gb(s.quota_bytes), 'aria-label': `Storage quota of ${u.username} in GB` });
    const qVideos = el('input', { type: 'number', class: 'quota-videos', min: '0', step: '1', placeholder: 'unlimited',
      value: Number.isFinite(s.quota_videos) ? String(s.quota_videos) : '', 'aria-label': `Video quota of ${u.username}` });
    const save = el('button', { type: 'button', class: 'save secondary' }, 'Save');
    save.addEventListener('click', async () => {
      $('users-done').hidden = true;
      $('users-error').hidden = true;
      // A quota is sent only when changed: the one shown may be the server's default, and
      // saving it unchanged would pin it on the user.
      const body = { role: role.value, disabled: disabled.checked };
      for (const [key, input, scale] of [['quota_bytes', qBytes, GB], ['quota_videos', qVideos, 1]]) {
        if (input.value === input.defaultValue && !input.validity.badInput) continue;
        body[key] = quota(input, scale);
        if (Number.isNaN(body[key])) {
          show('users-error', `Quotas of ${u.username}: a number of 0 or more, or empty for the default.`);
          return;
        }
      }
      save.disabled = true;
      try {
        await Cascade.send(`/api/admin/users/${encodeURIComponent(u.id)}`, 'PATCH', body);
        show('users-done', `Saved ${u.username}.`);
      } catch (err) {
        show('users-error', `Cannot save ${u.username}: ${err.message}`);
      }
      await loadUsers();
    });
    return el('tr', { 'data-user': u.username, 'data-id': u.id, class: u.disabled ? 'is-disabled' : null },
      el('td', {}, el('strong', {}, u.username), u.id === me.id ? el('span', { class: 'muted' }, ' (you)') : null,
        u.created_at ? el('div', { class: 'muted small' }, `since ${Cascade.when(u.created_at)}`) : null),
      el('td', {}, role),
      el('td', {}, el('label', { class: 'check' }, disabled, ' Disabled')),
      el('td', { class: 'used' }, Number.isFinite(s.bytes) ? `${Cascade.bytes(s.bytes)}, ${s.videos} video${s.videos === 1 ? '' : 's'}` : '–'),
      el('td', {}, qBytes),
      el('td', {}, qVideos),
      el('td', {}, save));
  };
  const loadUsers = async () => {
    try {
      const { users } = await Cascade.json('/api/admin/users');
      $('users').tBodies[0].replaceChildren(...users.map(row));
    } catch (err) {
      show('users-error', `Cannot load the users: ${err.message}`);
    }
  };
  loadUsers();

  $('create-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    $('create-error').hidden = true;
    $('created').hidden = true;
    $('create-user').disabled = true;
    try {
      const r = await Cascade.send('/api/admin/users', 'POST', {
        username: $('new-username').value.trim(),
        role: $('new-role').value,
        password: $('new-password').value || null,
      });
      const name = (r.user && r.user.username) || $('new-username').value.trim();
      $('created-text').textContent = `Created ${name}.`;
      $('created-password').textContent = r.password || '';
      $('created-secret').hidden = !r.password;
      $('created').hidden = false;
      $('create-form').reset();
      await loadUsers();
    } catch (err) {
      show('create-error', err.message);
    }
    $('create-user').disabled = false;
  });

  $('create-invite').addEventListener('click', async () => {
    $('invite-error').hidden = true;
    $('create-invite').disabled = true;
    try {
      const inv = await Cascade.send('/api/admin/invites', 'POST', { expires_days: 7 });
      const link = new URL(inv.url, window.location.href).href;
      $('invite-link').href = link;
      $('invite-link').textContent = link;
      $('invite-expires').textContent = inv.expires_at ? Cascade.when(inv.expires_at) : '–';
      $('invite').hidden = false;
    } catch (err) {
      show('invite-error', err.message);
    }
    $('create-invite').disabled = false;
  });
})();
