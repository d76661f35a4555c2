//! Where records live: sled (embedded, the default) or PostgreSQL (`CASCADE_DATABASE_URL`), the
//! same records on either (`kv.rs`). Every call from async code goes through [`AsyncStore`], which runs it on the blocking pool
//! so the store never blocks the executor.

mod accounts;
mod kv;
mod live;
pub mod migrate;
mod postgres;
mod records;
mod tus;
mod webhooks;

use std::sync::Arc;

pub use self::accounts::Usage;
pub use self::postgres::Change;
pub use self::records::Store;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] ::sled::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("cannot encode record: {0}")]
    Encode(String),
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// The database cannot be reached now (a restart, a lost connection): worth trying again.
    #[error("PostgreSQL is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Refused(String),
    #[error("store task failed: {0}")]
    Task(String),
    #[error("the user name {0} is taken")]
    NameTaken(String),
}

/// The store for async code: every call runs on the blocking pool.
#[derive(Clone)]
pub struct AsyncStore(Arc<Store>);

impl AsyncStore {
    /// Wraps a store.
    pub fn new(store: Store) -> AsyncStore {
        AsyncStore(Arc::new(store))
    }

    /// Runs `f` with the store off the async executor. `f` may return any error a store error
    /// converts into, so a closure can mix store calls with its caller's own errors.
    pub async fn run<R, E>(&self, f: impl FnOnce(&Store) -> Result<R, E> + Send + 'static) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let s = self.0.clone();
        tokio::task::spawn_blocking(move || f(&s)).await.map_err(|e| E::from(StoreError::Task(e.to_string())))?
    }

    /// The store itself, for code already on the blocking pool.
    pub fn blocking(&self) -> Arc<Store> {
        self.0.clone()
    }

    /// Flushes the store's log (awaited): call before acknowledging what must survive a crash.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.0.flush_async().await
    }
}

/// Stores on both engines for unit tests: sled in a temporary directory and PostgreSQL in a
/// fresh database (at `TEST_POSTGRES`, default the test machines' `127.0.0.1:5432`),
/// dropped again afterwards.
#[cfg(test)]
pub(crate) mod testing {
    use super::Store;

    /// A store that removes its database when dropped.
    pub struct TestStore {
        store: Option<Store>,
        _dir: Option<tempfile::TempDir>,
        database: Option<(String, String)>,
    }

    impl std::ops::Deref for TestStore {
        type Target = Store;
        fn deref(&self) -> &Store {
            self.store.as_ref().expect("store")
        }
    }

    impl Drop for TestStore {
        fn drop(&mut self) {
            drop(self.store.take());
            if let Some((server, name)) = self.database.take() {
                drop_database(&server, &name);
            }
        }
    }

    /// Removes a test database (its connections too).
    pub fn drop_database(server: &str, name: &str) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            if let Ok(mut c) = sqlx::PgConnection::connect(&format!("{server}/postgres")).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c).await;
            }
        });
    }

    impl TestStore {
        /// The URL of its PostgreSQL database (`None` on sled).
        pub fn url(&self) -> Option<String> {
            self.database.as_ref().map(|(server, name)| format!("{server}/{name}"))
        }
    }

    /// The PostgreSQL server of the tests.
    pub fn postgres_server() -> String {
        std::env::var("TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
    }

    /// A sled store and a PostgreSQL store, both empty. Panics (naming the server) when
    /// PostgreSQL cannot be reached: a test of both engines that ran on one would pass for
    /// what it did not check.
    pub fn each_engine() -> Vec<TestStore> {
        let dir = tempfile::tempdir().unwrap();
        let sled = Store::open(&dir.path().join("db")).unwrap();
        let server = postgres_server();
        let name = format!("cascade_unit_{}", uuid::Uuid::new_v4().simple());
        let pg = Store::connect(&format!("{server}/{name}"))
            .unwrap_or_else(|e| panic!("PostgreSQL at {server} (TEST_POSTGRES) is needed for the store tests: {e}"));
        vec![
            TestStore { store: Some(sled), _dir: Some(dir), database: None },
            TestStore { store: Some(pg), _dir: None, database: Some((server, name)) },
        ]
    }
}
