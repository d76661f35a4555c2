//! Access control: who may see and change what. Today: playback tokens (HMAC-signed, in media
//! URLs). The accounts issue adds users, sessions, API tokens, roles and CSRF checks here.

pub mod token;
