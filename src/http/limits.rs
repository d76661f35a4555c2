//! Limits on what one client can hold open: event streams (SSE) in all and per client address.
//! (Uploads arriving at once are counted by `upload::admit`; header and body timeouts are set on
//! the connection in `server`.)

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use crate::error::AppError;

/// The peer address of a request's connection, put into the request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// Open event streams, counted.
#[derive(Debug, Clone)]
pub struct Subscribers {
    counts: Arc<Mutex<Counts>>,
    max: usize,
    max_per_ip: usize,
}

/// One open event stream; dropping it (the stream ends or the client leaves) frees its place.
#[derive(Debug)]
pub struct Subscription {
    counts: Arc<Mutex<Counts>>,
    ip: Option<IpAddr>,
}

impl Subscribers {
    /// At most `max` streams, `max_per_ip` from one address.
    pub fn new(max: usize, max_per_ip: usize) -> Subscribers {
        Subscribers { counts: Arc::default(), max, max_per_ip }
    }

    /// A place for one more stream from `ip`, or 429.
    pub fn subscribe(&self, ip: Option<IpAddr>) -> Result<Subscription, AppError> {
        let mut c = self.counts.lock().map_err(|_| AppError::Internal("lock poisoned".into()))?;
        if c.total >= self.max {
            return Err(AppError::TooManySubscribers(format!("{} event streams are open; try again later", self.max)));
        }
        if let Some(ip) = ip {
            let n = c.by_ip.entry(ip).or_default();
            if *n >= self.max_per_ip {
                return Err(AppError::TooManySubscribers(format!("{} event streams are open from {ip}; close one first", self.max_per_ip)));
            }
            *n += 1;
        }
        c.total += 1;
        Ok(Subscription { counts: self.counts.clone(), ip })
    }

    /// Streams open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.counts.lock().map(|c| c.total).unwrap_or(0)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Ok(mut c) = self.counts.lock() else { return };
        c.total = c.total.saturating_sub(1);
        if let Some(ip) = self.ip {
            if let Some(n) = c.by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    c.by_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_capped_in_all_and_per_address() {
        let s = Subscribers::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = s.subscribe(Some(a)).unwrap();
        let _a2 = s.subscribe(Some(a)).unwrap();
        assert_eq!(s.subscribe(Some(a)).unwrap_err().code(), "too_many_subscribers");
        let _b1 = s.subscribe(Some(b)).unwrap();
        assert_eq!(s.subscribe(Some(b)).unwrap_err().code(), "too_many_subscribers", "the total is reached");
        drop(a1);
        assert_eq!(s.open(), 2);
        let _a3 = s.subscribe(Some(a)).unwrap();
        assert_eq!(s.open(), 3);
    }
}
