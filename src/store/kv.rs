//! The ordered key/value trees every record of the store lives in, on either engine: sled
//! (embedded, the default) or PostgreSQL (`postgres.rs`, one row per record in `cascade_kv`, keyed
//! by tree and key). The records' code (`sled.rs`, `accounts.rs`, …) is written once against
//! [`Tree`] and [`transaction`], so both engines hold every record type with the same keys, the
//! same JSON and the same atomicity, and `cascade migrate sled-to-postgres` is a copy tree by tree.
//!
//! Synchronous like sled: async code reaches the store through [`super::AsyncStore`].

use std::sync::Arc;

use sled::transaction::{ConflictableTransactionError, UnabortableTransactionError};
use sled::Transactional;

use super::postgres::{PgKv, PgTx};
use super::StoreError;

/// The error of a step inside a transaction: `Conflict` runs the transaction again, `Abort` ends
/// it with that error.
pub(super) type TxError = ConflictableTransactionError<StoreError>;

/// A key and its value.
pub(super) type Entry = (Vec<u8>, Vec<u8>);

/// The names of every tree, for copies between engines.
pub(super) const TREES: &[&str] = &[
    "videos",
    "jobs",
    "keys",
    "users",
    "usernames",
    "sessions",
    "tokens",
    "invites",
    "tus",
    "webhooks",
    "webhook_deliveries",
    "webhook_due",
    "live",
    "broadcasts",
];

/// The engine a store runs on.
#[derive(Clone)]
pub(super) enum Engine {
    Sled(sled::Db),
    Postgres(Arc<PgKv>),
}

impl Engine {
    /// The tree `name` (created on first use).
    pub(super) fn tree(&self, name: &'static str) -> Result<Tree, StoreError> {
        Ok(match self {
            Engine::Sled(db) => Tree::Sled(db.open_tree(name)?),
            Engine::Postgres(pg) => Tree::Postgres { pg: pg.clone(), name },
        })
    }

    /// A new id, larger than every id this engine gave before.
    pub(super) fn generate_id(&self) -> Result<u64, StoreError> {
        match self {
            Engine::Sled(db) => Ok(db.generate_id()?),
            Engine::Postgres(pg) => pg.generate_id(),
        }
    }

    /// Makes every id from now on at least `next` (after a copy from another engine).
    pub(super) fn advance_ids_to(&self, next: u64) -> Result<(), StoreError> {
        match self {
            Engine::Sled(_) => Err(StoreError::Task("sled's ids cannot be moved".into())),
            Engine::Postgres(pg) => pg.advance_ids_to(next),
        }
    }

    /// Makes what was written durable (sled: flushes its log; PostgreSQL commits are).
    pub(super) fn flush(&self) -> Result<(), StoreError> {
        if let Engine::Sled(db) = self {
            db.flush()?;
        }
        Ok(())
    }

    /// [`Engine::flush`] without blocking the executor.
    pub(super) async fn flush_async(&self) -> Result<(), StoreError> {
        if let Engine::Sled(db) = self {
            db.flush_async().await?;
        }
        Ok(())
    }

    /// "sled" or "postgres", for logs.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Engine::Sled(_) => "sled",
            Engine::Postgres(_) => "postgres",
        }
    }
}

/// One ordered tree of records. Reads of many records return them in key order (bytewise, as
/// sled orders them and as PostgreSQL orders `bytea`).
pub(super) enum Tree {
    Sled(sled::Tree),
    Postgres { pg: Arc<PgKv>, name: &'static str },
}

impl Tree {
    pub(super) fn get(&self, k: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Tree::Sled(t) => Ok(t.get(k)?.map(|v| v.to_vec())),
            Tree::Postgres { pg, name } => pg.get(name, k.as_ref()),
        }
    }

    pub(super) fn insert(&self, k: impl AsRef<[u8]>, v: impl Into<Vec<u8>>) -> Result<(), StoreError> {
        match self {
            Tree::Sled(t) => {
                t.insert(k, v.into())?;
                Ok(())
            }
            Tree::Postgres { pg, name } => pg.insert(name, k.as_ref(), &v.into()),
        }
    }

    /// Removes a record; returns its value.
    pub(super) fn remove(&self, k: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Tree::Sled(t) => Ok(t.remove(k)?.map(|v| v.to_vec())),
            Tree::Postgres { pg, name } => pg.remove(name, k.as_ref()),
        }
    }

    /// Sets `k` to `new` only if it is `old` now (`None`: absent); returns whether it did.
    pub(super) fn compare_and_swap(&self, k: impl AsRef<[u8]>, old: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool, StoreError> {
        match self {
            Tree::Sled(t) => Ok(t.compare_and_swap(k, old, new)?.is_ok()),
            Tree::Postgres { pg, name } => pg.compare_and_swap(name, k.as_ref(), old, new),
        }
    }

    /// Every record, in key order.
    pub(super) fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        self.scan_prefix(b"")
    }

    /// Every value, in key order.
    pub(super) fn values(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.entries()?.into_iter().map(|(_, v)| v).collect())
    }

    /// The records whose key starts with `prefix`, in key order.
    pub(super) fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        match self {
            Tree::Sled(t) => t.scan_prefix(prefix).map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(StoreError::from)).collect(),
            Tree::Postgres { pg, name } => pg.scan_prefix(name, prefix),
        }
    }

    /// The record with the smallest key.
    pub(super) fn first(&self) -> Result<Option<Entry>, StoreError> {
        match self {
            Tree::Sled(t) => Ok(t.first()?.map(|(k, v)| (k.to_vec(), v.to_vec()))),
            Tree::Postgres { pg, name } => pg.first(name),
        }
    }

    pub(super) fn is_empty(&self) -> Result<bool, StoreError> {
        match self {
            Tree::Sled(t) => Ok(t.is_empty()),
            Tree::Postgres { pg, name } => Ok(pg.first(name)?.is_none()),
        }
    }
}

/// A tree inside a transaction: reads see the transaction's own writes; nothing is visible to
/// others before it commits.
pub(super) enum TxTree<'a> {
    Sled(&'a sled::transaction::TransactionalTree),
    Postgres { tx: &'a PgTx<'a>, name: &'static str },
}

fn unabortable(e: UnabortableTransactionError) -> TxError {
    match e {
        UnabortableTransactionError::Conflict => ConflictableTransactionError::Conflict,
        UnabortableTransactionError::Storage(e) => ConflictableTransactionError::Abort(e.into()),
    }
}

impl TxTree<'_> {
    pub(super) fn get(&self, k: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, TxError> {
        match self {
            TxTree::Sled(t) => Ok(t.get(k).map_err(unabortable)?.map(|v| v.to_vec())),
            TxTree::Postgres { tx, name } => tx.get(name, k.as_ref()),
        }
    }

    /// A read of a record the transaction will change: on PostgreSQL it locks the row (in a
    /// `locking_transaction`, where plain reads take no part in conflicts). On sled, a read:
    /// its transactions conflict on what they read.
    pub(super) fn lock(&self, k: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, TxError> {
        match self {
            TxTree::Sled(t) => Ok(t.get(k).map_err(unabortable)?.map(|v| v.to_vec())),
            TxTree::Postgres { tx, name } => tx.lock(name, k.as_ref()),
        }
    }

    /// Like `lock`, but a record another transaction holds reads as absent at once (PostgreSQL's
    /// `SKIP LOCKED`): claimers never wait for each other.
    pub(super) fn lock_or_skip(&self, k: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, TxError> {
        match self {
            TxTree::Sled(t) => Ok(t.get(k).map_err(unabortable)?.map(|v| v.to_vec())),
            TxTree::Postgres { tx, name } => tx.lock_or_skip(name, k.as_ref()),
        }
    }

    pub(super) fn insert(&self, k: impl AsRef<[u8]>, v: impl Into<Vec<u8>>) -> Result<(), TxError> {
        match self {
            TxTree::Sled(t) => {
                t.insert(k.as_ref(), v.into()).map_err(unabortable)?;
                Ok(())
            }
            TxTree::Postgres { tx, name } => tx.insert(name, k.as_ref(), &v.into()),
        }
    }

    /// Removes a record; returns whether it was there.
    pub(super) fn remove(&self, k: impl AsRef<[u8]>) -> Result<bool, TxError> {
        match self {
            TxTree::Sled(t) => Ok(t.remove(k.as_ref()).map_err(unabortable)?.is_some()),
            TxTree::Postgres { tx, name } => tx.remove(name, k.as_ref()),
        }
    }
}

/// Runs `f` over `trees` (all of one store) as one transaction, again while it conflicts with
/// another. `f` may run more than once: it must have no effect outside the trees.
pub(super) fn transaction<R>(trees: &[&Tree], f: impl Fn(&[TxTree]) -> Result<R, TxError>) -> Result<R, StoreError> {
    run_transaction(trees, false, f)
}

/// Like `transaction`, but on PostgreSQL `READ COMMITTED` with row locks: `f` must read every
/// record it changes with `TxTree::lock` or `TxTree::lock_or_skip` (a plain read there is not
/// protected). On sled the same as `transaction`.
pub(super) fn locking_transaction<R>(trees: &[&Tree], f: impl Fn(&[TxTree]) -> Result<R, TxError>) -> Result<R, StoreError> {
    run_transaction(trees, true, f)
}

fn run_transaction<R>(trees: &[&Tree], locking: bool, f: impl Fn(&[TxTree]) -> Result<R, TxError>) -> Result<R, StoreError> {
    match trees.first() {
        None => Err(StoreError::Task("a transaction over no tree".into())),
        Some(Tree::Sled(_)) => {
            let sled_trees: Vec<&sled::Tree> = trees
                .iter()
                .map(|t| match t {
                    Tree::Sled(t) => Ok(t),
                    Tree::Postgres { .. } => Err(StoreError::Task("a transaction over two engines".into())),
                })
                .collect::<Result<_, _>>()?;
            sled_trees
                .as_slice()
                .transaction(|views| {
                    let txs: Vec<TxTree> = views.iter().map(TxTree::Sled).collect();
                    f(&txs)
                })
                .map_err(super::records::tx_err)
        }
        Some(Tree::Postgres { pg, .. }) => {
            let names: Vec<&'static str> = trees
                .iter()
                .map(|t| match t {
                    Tree::Postgres { name, .. } => Ok(*name),
                    Tree::Sled(_) => Err(StoreError::Task("a transaction over two engines".into())),
                })
                .collect::<Result<_, _>>()?;
            let run = |tx: &PgTx| {
                let txs: Vec<TxTree> = names.iter().map(|name| TxTree::Postgres { tx, name }).collect();
                f(&txs)
            };
            if locking {
                pg.locking_transaction(run)
            } else {
                pg.transaction(run)
            }
        }
    }
}
