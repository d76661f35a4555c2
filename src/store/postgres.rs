//! The store's trees on PostgreSQL (`sqlx`): one row per record in `cascade_kv (tree, k, v)`,
//! ids from the sequence `cascade_ids`, transactions `SERIALIZABLE` (a serialization failure runs
//! the transaction again, as a conflict does on sled). Migrations (`migrations/`) run at start-up
//! under sqlx's advisory lock, so any number of nodes may start at once; the database is created
//! when it does not exist.
//!
//! The store is synchronous (its callers run on tokio's blocking pool, or in commands without a
//! runtime), sqlx is async: the connection pool lives on a small runtime of its own and every
//! statement is sent there and waited for, with a time limit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row};
use tokio::sync::Mutex;

use super::kv::{Entry, TxError};
use super::StoreError;

/// The migrations, embedded in the binary (`migrations/` in the repository). Listed here rather
/// than by sqlx's `migrate!` macro, whose proc-macro crates build sqlx-core a second time (for
/// the host) in every profile the test command builds.
#[derive(Debug)]
struct Migrations;

impl sqlx::migrate::MigrationSource<'static> for Migrations {
    fn resolve(self) -> futures_util::future::BoxFuture<'static, Result<Vec<sqlx::migrate::Migration>, sqlx::error::BoxDynError>> {
        use sqlx::migrate::{Migration, MigrationType};
        let m = |version, description: &'static str, sql: &'static str| {
            Migration::new(version, description.into(), MigrationType::Simple, sql.into(), false)
        };
        Box::pin(async move {
            Ok(vec![
                m(1, "records", include_str!("../../migrations/0001_records.sql")),
                m(2, "notify", include_str!("../../migrations/0002_notify.sql")),
            ])
        })
    }
}

/// The longest one statement may take (a database that stopped answering fails the call instead
/// of holding a worker forever).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a transaction that keeps conflicting is tried before it fails.
const MAX_TRIES: usize = 64;

/// The connection pool and the runtime it lives on.
pub(crate) struct PgKv {
    pool: PgPool,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for PgKv {
    fn drop(&mut self) {
        // Shutting a runtime down waits for its tasks unless told not to, and may not wait
        // inside another runtime: the store may be dropped anywhere.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn pg_err(e: sqlx::Error) -> StoreError {
    if is_unavailable(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Postgres(e.to_string())
    }
}

/// Whether an error says the database cannot be reached now rather than that a statement is
/// wrong: a lost or refused connection, a pool without one, a server shutting down or starting
/// (SQLSTATE classes 08 and 57P).
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

/// Whether PostgreSQL refused a statement because of a concurrent transaction (serialization
/// failure or deadlock): the transaction is run again.
fn is_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("40001") | Some("40P01")))
}

/// What another process changed (see `PgKv::listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A video's record, by id.
    Video(String),
    /// A job was queued.
    Job,
    /// Changes may have been missed (the listening connection was lost).
    Resync,
}

/// The application name of a process's connections (at most 63 bytes, PostgreSQL's limit).
fn application_name(node: &str) -> String {
    format!("cascade-{node}").chars().take(63).collect()
}

/// A NOTIFY payload of migration 0002 (`{application name} {tree} {key in hex}`), unless it is
/// `me`'s own change or not one of ours.
fn parse_change(me: &str, payload: &str) -> Option<Change> {
    let mut parts = payload.splitn(3, ' ');
    let (from, tree, key) = (parts.next()?, parts.next()?, parts.next()?);
    if from == me {
        return None;
    }
    match tree {
        "videos" => String::from_utf8(hex::decode(key).ok()?).ok().map(Change::Video),
        "jobs" => Some(Change::Job),
        _ => None,
    }
}

/// The smallest key above every key that starts with `prefix` (`None`: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl PgKv {
    /// Connects to `url`, creates the database if it does not exist and runs the migrations.
    /// The connections carry `node` in their application name (what `listen` skips).
    pub(crate) fn connect(url: &str, node: &str) -> Result<PgKv, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cascade-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Task(format!("cannot start the PostgreSQL runtime: {e}")))?;
        // The pool's own tasks (the reaper of idle connections) run on that runtime.
        let pool = {
            let _in_rt = rt.enter();
            let options = url.parse::<PgConnectOptions>().map_err(pg_err)?.application_name(&application_name(node));
            PgPoolOptions::new().acquire_timeout(Duration::from_secs(10)).connect_lazy_with(options)
        };
        let kv = PgKv { pool, rt: Some(rt) };
        let url = url.to_string();
        let pool = kv.pool.clone();
        kv.block(async move {
            // Two nodes starting at once may both find it missing: the second create fails and
            // finds it there.
            if !Postgres::database_exists(&url).await? {
                if let Err(e) = Postgres::create_database(&url).await {
                    if !Postgres::database_exists(&url).await? {
                        return Err(e);
                    }
                }
            }
            let migrator = sqlx::migrate::Migrator::new(Migrations).await.map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
            migrator.run(&pool).await.map_err(|e| sqlx::Error::Migrate(Box::new(e)))
        })?;
        Ok(kv)
    }

    /// Follows the changes other processes make (LISTEN cascade, sent by migration 0002's
    /// trigger), skipping those of `node` (this process). A lost connection is re-made, and
    /// reported as `Resync` (changes made meanwhile were missed). Ends when the receiver is
    /// dropped. A receiver that falls 4096 changes behind loses the newest. For workers a change
    /// is a hint (they also poll); for a watcher on another node it is the only news until the
    /// video's next change.
    pub(crate) fn listen(&self, node: &str) -> Result<tokio::sync::mpsc::Receiver<Change>, StoreError> {
        let rt = self.rt.as_ref().ok_or_else(|| StoreError::Task("the PostgreSQL runtime is gone".into()))?;
        let (pool, me) = (self.pool.clone(), application_name(node));
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        rt.spawn(async move {
            let mut listener = loop {
                let listener = async {
                    let mut l = PgListener::connect_with(&pool).await?;
                    l.listen("cascade").await?;
                    Ok::<_, sqlx::Error>(l)
                };
                match listener.await {
                    // Whatever changed before now was not heard: look again.
                    Ok(l) => {
                        let _ = tx.try_send(Change::Resync);
                        break l;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot listen for other processes' changes: trying again in 1 s"),
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            loop {
                let change = match listener.try_recv().await {
                    Ok(Some(n)) => parse_change(&me, n.payload()),
                    Ok(None) => {
                        tracing::warn!("the connection listening for other processes' changes was lost: reconnecting");
                        Some(Change::Resync)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for other processes' changes: trying again in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Some(Change::Resync)
                    }
                };
                if tx.is_closed() {
                    return;
                }
                if let Some(c) = change {
                    let _ = tx.try_send(c);
                }
            }
        });
        Ok(rx)
    }

    /// Runs `fut` on the pool's runtime and waits for it (from any thread).
    fn block<T: Send + 'static>(&self, fut: impl Future<Output = Result<T, sqlx::Error>> + Send + 'static) -> Result<T, StoreError> {
        self.block_raw(fut)?.map_err(pg_err)
    }

    fn block_raw<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    ) -> Result<Result<T, sqlx::Error>, StoreError> {
        let rt = self.rt.as_ref().ok_or_else(|| StoreError::Task("the PostgreSQL runtime is gone".into()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(tokio::time::timeout(STATEMENT_TIMEOUT, fut).await);
        });
        match rx.recv() {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(StoreError::Unavailable(format!("no answer in {} s", STATEMENT_TIMEOUT.as_secs()))),
            Err(_) => Err(StoreError::Task("the PostgreSQL runtime is gone".into())),
        }
    }

    pub(super) fn generate_id(&self) -> Result<u64, StoreError> {
        let pool = self.pool.clone();
        let id: i64 = self.block(async move { sqlx::query_scalar("SELECT nextval('cascade_ids')").fetch_one(&pool).await })?;
        Ok(id as u64)
    }

    pub(super) fn advance_ids_to(&self, next: u64) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        let next = i64::try_from(next.max(1)).map_err(|_| StoreError::Task(format!("id {next} is too large")))?;
        self.block(async move {
            // The next nextval() is `next` or more.
            sqlx::query("SELECT setval('cascade_ids', GREATEST($1, (SELECT last_value + 1 FROM cascade_ids)), false)")
                .bind(next)
                .execute(&pool)
                .await
                .map(|_| ())
        })
    }

    pub(super) fn get(&self, tree: &'static str, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let (pool, k) = (self.pool.clone(), k.to_vec());
        self.block(async move {
            sqlx::query_scalar("SELECT v FROM cascade_kv WHERE tree = $1 AND k = $2").bind(tree).bind(k).fetch_optional(&pool).await
        })
    }

    pub(super) fn insert(&self, tree: &'static str, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
        let (pool, k, v) = (self.pool.clone(), k.to_vec(), v.to_vec());
        self.block(async move { sqlx::query(UPSERT).bind(tree).bind(k).bind(v).execute(&pool).await.map(|_| ()) })
    }

    pub(super) fn remove(&self, tree: &'static str, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let (pool, k) = (self.pool.clone(), k.to_vec());
        self.block(async move {
            sqlx::query_scalar("DELETE FROM cascade_kv WHERE tree = $1 AND k = $2 RETURNING v")
                .bind(tree)
                .bind(k)
                .fetch_optional(&pool)
                .await
        })
    }

    pub(super) fn compare_and_swap(
        &self,
        tree: &'static str,
        k: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let (pool, k, old, new) = (self.pool.clone(), k.to_vec(), old.map(<[u8]>::to_vec), new.map(<[u8]>::to_vec));
        self.block(async move {
            let q = match (old, new) {
                (None, None) => {
                    let there: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM cascade_kv WHERE tree = $1 AND k = $2)")
                        .bind(tree)
                        .bind(k)
                        .fetch_one(&pool)
                        .await?;
                    return Ok(!there);
                }
                (None, Some(new)) => {
                    sqlx::query("INSERT INTO cascade_kv (tree, k, v) VALUES ($1, $2, $3) ON CONFLICT (tree, k) DO NOTHING")
                        .bind(tree)
                        .bind(k)
                        .bind(new)
                }
                (Some(old), Some(new)) => {
                    sqlx::query("UPDATE cascade_kv SET v = $4 WHERE tree = $1 AND k = $2 AND v = $3").bind(tree).bind(k).bind(old).bind(new)
                }
                (Some(old), None) => {
                    sqlx::query("DELETE FROM cascade_kv WHERE tree = $1 AND k = $2 AND v = $3").bind(tree).bind(k).bind(old)
                }
            };
            Ok(q.execute(&pool).await?.rows_affected() == 1)
        })
    }

    pub(super) fn scan_prefix(&self, tree: &'static str, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let (pool, start, end) = (self.pool.clone(), prefix.to_vec(), prefix_end(prefix));
        let rows = self.block(async move {
            sqlx::query("SELECT k, v FROM cascade_kv WHERE tree = $1 AND k >= $2 AND ($3::bytea IS NULL OR k < $3) ORDER BY k")
                .bind(tree)
                .bind(start)
                .bind(end)
                .fetch_all(&pool)
                .await
        })?;
        rows.into_iter().map(|r| Ok((r.try_get(0).map_err(pg_err)?, r.try_get(1).map_err(pg_err)?))).collect()
    }

    pub(super) fn first(&self, tree: &'static str) -> Result<Option<Entry>, StoreError> {
        let pool = self.pool.clone();
        let row = self.block(async move {
            sqlx::query("SELECT k, v FROM cascade_kv WHERE tree = $1 ORDER BY k LIMIT 1").bind(tree).fetch_optional(&pool).await
        })?;
        row.map(|r| Ok((r.try_get(0).map_err(pg_err)?, r.try_get(1).map_err(pg_err)?))).transpose()
    }

    /// Runs `f` in a `SERIALIZABLE` transaction, again (up to [`MAX_TRIES`] times) while it
    /// conflicts with another.
    pub(super) fn transaction<R>(&self, f: impl Fn(&PgTx) -> Result<R, TxError>) -> Result<R, StoreError> {
        self.transaction_from("BEGIN ISOLATION LEVEL SERIALIZABLE", f)
    }

    /// Runs `f` in a `READ COMMITTED` transaction whose reads of records it will change take
    /// row locks (`PgTx::lock`, `PgTx::lock_or_skip`): a claim of a job, which must not wait for
    /// (or conflict with) another process claiming another job.
    pub(super) fn locking_transaction<R>(&self, f: impl Fn(&PgTx) -> Result<R, TxError>) -> Result<R, StoreError> {
        self.transaction_from("BEGIN ISOLATION LEVEL READ COMMITTED", f)
    }

    fn transaction_from<R>(&self, begin: &'static str, f: impl Fn(&PgTx) -> Result<R, TxError>) -> Result<R, StoreError> {
        for _ in 0..MAX_TRIES {
            let pool = self.pool.clone();
            let conn = self.block(async move { pool.acquire().await })?;
            let tx = PgTx { kv: self, conn: Some(Arc::new(Mutex::new(conn))) };
            let outcome = match tx.exec(begin) {
                Ok(()) => f(&tx),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(r) => match tx.exec("COMMIT") {
                    Ok(()) => return Ok(r),
                    Err(TxError::Conflict) => continue,
                    Err(TxError::Abort(e)) => return Err(e),
                    Err(TxError::Storage(e)) => return Err(e.into()),
                },
                Err(e) => {
                    tx.rollback();
                    match e {
                        TxError::Conflict => continue,
                        TxError::Abort(e) => return Err(e),
                        TxError::Storage(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(StoreError::Postgres(format!("a transaction conflicted {MAX_TRIES} times in a row")))
    }
}

/// `INSERT` or replace one record.
const UPSERT: &str = "INSERT INTO cascade_kv (tree, k, v) VALUES ($1, $2, $3) ON CONFLICT (tree, k) DO UPDATE SET v = EXCLUDED.v";

/// One transaction's connection.
pub(crate) struct PgTx<'a> {
    kv: &'a PgKv,
    conn: Option<Arc<Mutex<PoolConnection<Postgres>>>>,
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        // A pooled connection goes back to its pool from a task on the pool's runtime.
        if let Some(rt) = &self.kv.rt {
            let _in_rt = rt.enter();
            drop(self.conn.take());
        }
    }
}

impl PgTx<'_> {
    /// Runs `q` on the transaction's connection; a serialization failure is a conflict.
    fn run<T: Send + 'static, F>(&self, q: impl FnOnce(Arc<Mutex<PoolConnection<Postgres>>>) -> F) -> Result<T, TxError>
    where
        F: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    {
        let conn = self.conn.clone().ok_or_else(|| TxError::Abort(StoreError::Task("the transaction has ended".into())))?;
        match self.kv.block_raw(q(conn)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if is_conflict(&e) => Err(TxError::Conflict),
            Ok(Err(e)) => Err(TxError::Abort(pg_err(e))),
            Err(e) => Err(TxError::Abort(e)),
        }
    }

    fn exec(&self, sql: &'static str) -> Result<(), TxError> {
        self.run(|c| async move { sqlx::query(sql).execute(&mut **c.lock().await).await.map(|_| ()) })
    }

    /// Ends the transaction without effect; a connection that cannot roll back is closed
    /// rather than given back to the pool in the middle of a transaction.
    fn rollback(&self) {
        let ok = self.exec("ROLLBACK").is_ok();
        if !ok {
            if let Some(Ok(mut c)) = self.conn.as_ref().map(|c| c.try_lock()) {
                c.close_on_drop();
            }
        }
    }

    /// One record's value by `sql` (a `SELECT v … WHERE tree = $1 AND k = $2`, maybe locking).
    fn read(&self, sql: &'static str, tree: &'static str, k: &[u8]) -> Result<Option<Vec<u8>>, TxError> {
        let k = k.to_vec();
        self.run(|c| async move { sqlx::query_scalar(sql).bind(tree).bind(k).fetch_optional(&mut **c.lock().await).await })
    }

    pub(super) fn get(&self, tree: &'static str, k: &[u8]) -> Result<Option<Vec<u8>>, TxError> {
        self.read("SELECT v FROM cascade_kv WHERE tree = $1 AND k = $2", tree, k)
    }

    /// Reads a record and locks it until the transaction ends, waiting for another holder.
    pub(super) fn lock(&self, tree: &'static str, k: &[u8]) -> Result<Option<Vec<u8>>, TxError> {
        self.read("SELECT v FROM cascade_kv WHERE tree = $1 AND k = $2 FOR UPDATE", tree, k)
    }

    /// Reads a record and locks it until the transaction ends, or gives `None` at once if
    /// another transaction holds it (`FOR UPDATE SKIP LOCKED`), as if it were absent.
    pub(super) fn lock_or_skip(&self, tree: &'static str, k: &[u8]) -> Result<Option<Vec<u8>>, TxError> {
        self.read("SELECT v FROM cascade_kv WHERE tree = $1 AND k = $2 FOR UPDATE SKIP LOCKED", tree, k)
    }

    pub(super) fn insert(&self, tree: &'static str, k: &[u8], v: &[u8]) -> Result<(), TxError> {
        let (k, v) = (k.to_vec(), v.to_vec());
        self.run(|c| async move { sqlx::query(UPSERT).bind(tree).bind(k).bind(v).execute(&mut **c.lock().await).await.map(|_| ()) })
    }

    pub(super) fn remove(&self, tree: &'static str, k: &[u8]) -> Result<bool, TxError> {
        let k = k.to_vec();
        self.run(|c| async move {
            let r =
                sqlx::query("DELETE FROM cascade_kv WHERE tree = $1 AND k = $2").bind(tree).bind(k).execute(&mut **c.lock().await).await?;
            Ok(r.rows_affected() > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_key_above_the_prefix() {
        assert_eq!(prefix_end(b"ab/"), Some(b"ab0".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
