// First run: POST /api/setup creates the first admin (and logs them in), then the account page.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const code = new URLSearchParams(window.location.search).get('code');
  if (code) $('setup-code').value = code;
  const fail = (...parts) => { $('error').replaceChildren(...parts); $('error').hidden = false; };
  $('setup-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    $('error').hidden = true;
    $('setup-button').disabled = true;
    try {
      await Cascade.send('/api/setup', 'POST', {
        code: $('setup-code').value.trim(),
        username: $('username').value,
        password: $('password').value,
      });
      window.location.assign('/account');
      return;
    } catch (err) {
      if (err.status === 404) {
        $('setup-form').hidden = true;
        fail('Setup is finished: an account exists. ', Cascade.el('a', { href: '/login', id: 'login-link' }, 'Log in'), ' instead.');
      } else if (err.status === 403) {
        fail('Wrong setup code (it is printed in the server log).');
      } else {
        fail(err.message);
      }
    }
    $('setup-button').disabled = false;
  });
})();
