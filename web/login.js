// Login page: POST /api/session, then back to where the user came from (a path on this site only).
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const next = new URLSearchParams(window.location.search).get('next');
  const target = next && next.startsWith('/') && !next.startsWith('//') ? next : '/upload';
  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    $('error').hidden = true;
    $('login-button').disabled = true;
    try {
      await Cascade.json('/api/session', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ username: $('username').value, password: $('password').value }),
      });
      window.location.assign(target);
    } catch (err) {
      $('error').textContent = err.status === 429 ? 'Too many failed attempts; try again later.' : 'Wrong user name or password.';
      $('error').hidden = false;
      $('login-button').disabled = false;
    }
  });
})();
