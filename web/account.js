// Account page: who I am and my storage, change password, personal API tokens, log out.
'use strict';
(async () => {
  const $ = (id) => document.getElementById(id);
  const { el } = Cascade;
  const show = (id, msg) => { $(id).textContent = msg; $(id).hidden = false; };

  let me;
  try {
    me = await Cascade.json('/api/me');
  } catch (err) {
    if (err.status === 401) { window.location.replace('/login?next=/account'); return; }
    show('error', `Cannot load your account: ${err.message}`);
    return;
  }
  $('me-name').textContent = me.username;
  $('me-role').textContent = me.role === 'admin' ? 'Administrator' : 'Uploader';
  $('storage').textContent = Cascade.storage(me.storage);
  $('account-content').hidden = false;

  $('logout').addEventListener('click', async () => {
    $('logout').disabled = true;
    try {
      await Cascade.send('/api/session', 'DELETE');
    } catch (_) { /* logged out already, or the session is gone: either way, leave */ }
    window.location.assign('/');
  });

  $('password-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    $('password-done').hidden = true;
    $('password-error').hidden = true;
    $('password-button').disabled = true;
    try {
      await Cascade.send('/api/me/password', 'PUT', {
        current_password: $('current-password').value,
        new_password: $('new-password').value,
      });
      $('password-form').reset();
      $('password-done').hidden = false;
    } catch (err) {
      show('password-error', err.message);
    }
    $('password-button').disabled = false;
  });

  // Tokens: the list, revoke per row, create (the secret is shown once).
  const loadTokens = async () => {
    $('tokens-error').hidden = true;
    let tokens;
    try {
      ({ tokens } = await Cascade.json('/api/tokens'));
    } catch (err) {
      show('tokens-error', `Cannot load your tokens: ${err.message}`);
      return;
    }
    const now = Date.now();
    $('tokens').tBodies[0].replaceChildren(...tokens.map((t) => {
      const revoke = el('button', { type: 'button', class: 'revoke danger', 'aria-label': `Revoke ${t.name}` }, 'Revoke');
      revoke.addEventListener('click', async () => {
        revoke.disabled = true;
        try {
          await Cascade.send(`/api/tokens/${encodeURIComponent(t.id)}`, 'DELETE');
        } catch (err) {
          show('tokens-error', `Cannot revoke ${t.name}: ${err.message}`);
        }
        await loadTokens();
      });
      const expired = t.expires_at && Date.parse(t.expires_at) <= now;
      return el('tr', { 'data-token': t.id },
        el('td', {}, t.name),
        el('td', {}, (t.scopes || []).join(', ')),
        el('td', {}, Cascade.when(t.created_at)),
        el('td', { class: expired ? 'expired' : null }, t.expires_at ? `${Cascade.when(t.expires_at)}${expired ? ' (expired)' : ''}` : 'never'),
        el('td', {}, revoke));
    }));
    $('tokens').hidden = !tokens.length;
    $('no-tokens').hidden = !!tokens.length;
  };
  loadTokens();

  $('token-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    $('token-error').hidden = true;
    $('new-token').hidden = true;
    const scopes = ['upload', 'manage'].filter((s) => $(`scope-${s}`).checked);
    if (!scopes.length) { show('token-error', 'Choose at least one scope.'); return; }
    const days = $('token-expires').value.trim();
    $('token-button').disabled = true;
    try {
      const t = await Cascade.send('/api/tokens', 'POST', {
        name: $('token-name').value.trim(),
        scopes,
        expires_days: days ? Number(days) : null,
      });
      $('new-token').replaceChildren(
        el('p', {}, `Token "${t.name}": `, el('code', { class: 'secret', id: 'new-token-value' }, t.token)),
        el('p', { class: 'muted' }, 'Copy it now: it will not be shown again.'));
      $('new-token').hidden = false;
      $('token-form').reset();
      await loadTokens();
    } catch (err) {
      show('token-error', err.message);
    }
    $('token-button').disabled = false;
  });
})();
