//! Access control: who may see and change what. Accounts (users, sessions, API tokens, roles and
//! the rules on videos) in `accounts`, login rate limits in `limits`, playback tokens
//! (HMAC-signed, in media URLs) in `token`.

pub mod accounts;
pub mod admin;
pub mod limits;
pub mod token;
