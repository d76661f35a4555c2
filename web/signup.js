// Sign-up page: /api/config says whether sign-up is closed, by invite (?invite= in the link) or
// open; POST /api/signup creates the account and logs it in, then the upload page.
'use strict';
(async () => {
  const $ = (id) => document.getElementById(id);
  const invite = new URLSearchParams(window.location.search).get('invite') || null;
  const fail = (msg) => { $('error').textContent = msg; $('error').hidden = false; };

  let mode = null;
  try {
    mode = (await Cascade.json('/api/config')).signup;
  } catch (err) {
    fail(`Cannot load the server settings: ${err.message}`);
  }
  if (mode === 'closed') { $('closed').hidden = false; return; }
  if (mode === 'invite' && !invite) { $('need-invite').hidden = false; return; }
  $('invited').hidden = !invite;
  $('signup-form').hidden = false;

  $('signup-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    $('error').hidden = true;
    $('signup-button').disabled = true;
    try {
      await Cascade.send('/api/signup', 'POST', { username: $('username').value, password: $('password').value, invite });
      window.location.assign('/upload');
      return;
    } catch (err) {
      fail(err.status === 409 ? 'That user name is taken.' : err.message);
    }
    $('signup-button').disabled = false;
  });
})();
