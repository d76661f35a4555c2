//! Login attempts are limited per account and per client address: a guesser gets `429` long
//! before a password falls, and the answer is the same whether the account exists or not.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins allowed per account name in a window.
pub const PER_ACCOUNT: u32 = 5;
/// Failed logins allowed per client address in a window.
pub const PER_IP: u32 = 30;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Entries kept at most (older windows are dropped first), so memory stays bounded.
const MAX_ENTRIES: usize = 100_000;

/// Counts failed logins.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

fn keys(name: &str, ip: Option<IpAddr>) -> [(String, u32); 2] {
    [(format!("user:{}", name.to_lowercase()), PER_ACCOUNT), (format!("ip:{}", ip.map(|i| i.to_string()).unwrap_or_default()), PER_IP)]
}

impl LoginLimiter {
    /// Whether another attempt for `name` from `ip` may be checked now.
    pub fn allowed(&self, name: &str, ip: Option<IpAddr>) -> bool {
        let Ok(f) = self.failures.lock() else { return false };
        keys(name, ip).iter().all(|(k, max)| f.get(k).is_none_or(|(n, since)| since.elapsed() > WINDOW || n < max))
    }

    /// Records a failed attempt.
    pub fn failed(&self, name: &str, ip: Option<IpAddr>) {
        let Ok(mut f) = self.failures.lock() else { return };
        if f.len() >= MAX_ENTRIES {
            f.retain(|_, (_, since)| since.elapsed() <= WINDOW);
        }
        for (k, _) in keys(name, ip) {
            let e = f.entry(k).or_insert((0, Instant::now()));
            if e.1.elapsed() > WINDOW {
                *e = (0, Instant::now());
            }
            e.0 += 1;
        }
    }

    /// Counts one event under `key` (a sign-up from an address…) and says whether it is within
    /// `max` per window; once over, further events are refused and not counted.
    pub fn hit(&self, key: &str, max: u32) -> bool {
        let Ok(mut f) = self.failures.lock() else { return false };
        if f.len() >= MAX_ENTRIES {
            f.retain(|_, (_, since)| since.elapsed() <= WINDOW);
        }
        let e = f.entry(format!("hit:{key}")).or_insert((0, Instant::now()));
        if e.1.elapsed() > WINDOW {
            *e = (0, Instant::now());
        }
        if e.0 >= max {
            return false;
        }
        e.0 += 1;
        true
    }

    /// A successful login clears the account's count (not the address's).
    pub fn succeeded(&self, name: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(&format!("user:{}", name.to_lowercase()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_limited_per_account_and_per_address() {
        let l = LoginLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..PER_ACCOUNT {
            assert!(l.allowed("Alice", Some(a)));
            l.failed("alice", Some(a));
        }
        assert!(!l.allowed("ALICE", Some("10.0.0.2".parse().unwrap())), "per account, from any address");
        assert!(l.allowed("bob", Some(a)));
        for i in 0..PER_IP {
            l.failed(&format!("user{i}"), Some(a));
        }
        assert!(!l.allowed("carol", Some(a)), "per address, for any account");
        l.succeeded("alice");
        assert!(l.allowed("alice", Some("10.0.0.3".parse().unwrap())));
        assert!((0..3).all(|_| l.hit("signup:a", 3)));
        assert!(!l.hit("signup:a", 3) && l.hit("signup:b", 3));
    }
}
