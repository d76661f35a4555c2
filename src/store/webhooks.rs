//! Webhook endpoints and their outbox in the store. A delivery is written before anyone
//! is told of it, and stays pending (with its due time indexed in `due`) until delivered or given
//! up, so a restart loses none.

use super::kv::transaction;
use super::records::{dec, enc};
use super::{Store, StoreError};
use crate::model::{Delivery, DeliveryState, Webhook};

fn due_key(d: &Delivery) -> Vec<u8> {
    format!("{:020}/{}", d.next_at.timestamp_millis().max(0), d.id).into_bytes()
}

impl Store {
    pub fn add_webhook(&self, w: &Webhook) -> Result<(), StoreError> {
        self.webhooks.insert(w.id.as_bytes(), enc(w)?)?;
        Ok(())
    }

    pub fn webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError> {
        self.webhooks.get(id.as_bytes())?.map(|b| dec(&b)).transpose()
    }

    /// Every endpoint (`owner`: one user's only), oldest first.
    pub fn webhooks(&self, owner: Option<&str>) -> Result<Vec<Webhook>, StoreError> {
        let mut out: Vec<Webhook> = self.webhooks.values()?.iter().map(|v| dec(v)).collect::<Result<_, _>>()?;
        out.retain(|w| owner.is_none_or(|o| w.owner == o));
        out.sort_by_key(|w| w.created_at);
        Ok(out)
    }

    /// Removes an endpoint with its deliveries. False if it did not exist.
    pub fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        if self.webhooks.remove(id.as_bytes())?.is_none() {
            return Ok(false);
        }
        for (k, v) in self.deliveries.scan_prefix(format!("{id}/").as_bytes())? {
            let d: Delivery = dec(&v)?;
            if d.state == DeliveryState::Pending {
                self.due.remove(due_key(&d))?;
            }
            self.deliveries.remove(k)?;
        }
        Ok(true)
    }

    /// A sequence number for a new delivery's id.
    pub fn next_delivery_seq(&self) -> Result<u64, StoreError> {
        self.db.generate_id()
    }

    /// Writes new deliveries into the outbox, each pending and due at its `next_at`.
    pub fn enqueue_deliveries(&self, list: &[Delivery]) -> Result<(), StoreError> {
        let encoded = list
            .iter()
            .map(|d| Ok((d.id.clone(), enc(d)?, (d.state == DeliveryState::Pending).then(|| due_key(d)))))
            .collect::<Result<Vec<_>, StoreError>>()?;
        transaction(&[&self.deliveries, &self.due], |t| {
            for (id, body, key) in &encoded {
                t[0].insert(id.as_bytes(), body.clone())?;
                if let Some(key) = key {
                    t[1].insert(key, id.as_bytes())?;
                }
            }
            Ok(())
        })
    }

    /// Pending deliveries due at or before `now_ms`, earliest first, at most `limit`.
    pub fn due_deliveries(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let mut out = Vec::new();
        for (k, id) in self.due.entries()? {
            let at: i64 = std::str::from_utf8(&k[..20.min(k.len())]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
            if at > now_ms || out.len() >= limit {
                break;
            }
            match self.deliveries.get(&id)? {
                Some(v) => out.push(dec(&v)?),
                // Its endpoint was removed meanwhile.
                None => {
                    self.due.remove(k)?;
                }
            }
        }
        Ok(out)
    }

    /// When the earliest pending delivery is due (ms since the epoch).
    pub fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.due.first()?.and_then(|(k, _)| std::str::from_utf8(&k[..20.min(k.len())]).ok()?.parse().ok()))
    }

    /// Stores a delivery after an attempt (`before`: as it was, to move its due entry). False if
    /// its endpoint is gone.
    pub fn update_delivery(&self, before: &Delivery, after: &Delivery) -> Result<bool, StoreError> {
        let body = enc(after)?;
        let (old_key, new_key) = (due_key(before), due_key(after));
        let pending = after.state == DeliveryState::Pending;
        transaction(&[&self.deliveries, &self.due], |t| {
            let (deliveries, due) = (&t[0], &t[1]);
            if deliveries.get(after.id.as_bytes())?.is_none() {
                due.remove(&old_key)?;
                return Ok(false);
            }
            deliveries.insert(after.id.as_bytes(), body.clone())?;
            due.remove(&old_key)?;
            if pending {
                due.insert(&new_key, after.id.as_bytes())?;
            }
            Ok(true)
        })
    }

    /// Keeps an endpoint's log bounded: removes its oldest finished deliveries beyond `keep`
    /// (pending ones always stay).
    pub fn prune_deliveries(&self, webhook_id: &str, keep: usize) -> Result<(), StoreError> {
        let prefix = format!("{webhook_id}/");
        let all = self.deliveries.scan_prefix(prefix.as_bytes())?;
        let mut excess = all.len().saturating_sub(keep);
        for (k, v) in all {
            if excess == 0 {
                break;
            }
            if dec::<Delivery>(&v)?.state != DeliveryState::Pending {
                self.deliveries.remove(k)?;
                excess -= 1;
            }
        }
        Ok(())
    }

    /// An endpoint's deliveries, newest first, at most `limit`.
    pub fn deliveries(&self, webhook_id: &str, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.deliveries.scan_prefix(format!("{webhook_id}/").as_bytes())?.iter().rev().take(limit).map(|(_, v)| dec(v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn delivery(s: &Store, hook: &str, state: DeliveryState) -> Delivery {
        let now = Utc::now();
        Delivery {
            id: format!("{hook}/{:020}", s.next_delivery_seq().unwrap()),
            webhook_id: hook.into(),
            event: "video.ready".into(),
            body: "{}".into(),
            created_at: now,
            state,
            attempts: 0,
            next_at: now,
            last_status: None,
            last_error: None,
            delivered_at: None,
        }
    }

    #[test]
    fn the_outbox_keeps_pending_deliveries_and_a_bounded_log() {
        for s in crate::store::testing::each_engine() {
            eprintln!("engine: {}", s.engine());
            let pending = delivery(&s, "h1", DeliveryState::Pending);
            let done: Vec<Delivery> = (0..5).map(|_| delivery(&s, "h1", DeliveryState::Delivered)).collect();
            s.enqueue_deliveries(std::slice::from_ref(&pending)).unwrap();
            s.enqueue_deliveries(&done).unwrap();
            // Only what is pending is due.
            let due: Vec<String> = s.due_deliveries(Utc::now().timestamp_millis() + 1, 100).unwrap().into_iter().map(|d| d.id).collect();
            assert_eq!(due, std::slice::from_ref(&pending.id));
            s.prune_deliveries("h1", 3).unwrap();
            let log = s.deliveries("h1", 100).unwrap();
            assert_eq!(log.len(), 3);
            assert!(log.iter().any(|d| d.id == pending.id), "the pending one stays");
            assert_eq!(log[0].id, done[4].id, "newest first");
            // An attempt moves it out of the due index once delivered.
            let after = Delivery { state: DeliveryState::Delivered, attempts: 1, ..pending.clone() };
            assert!(s.update_delivery(&pending, &after).unwrap());
            assert!(s.due_deliveries(i64::MAX, 100).unwrap().iter().all(|d| d.id != pending.id));
        }
    }
}
