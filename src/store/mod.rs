//! Where records live. `sled` is the embedded default; the scale-out issue adds PostgreSQL beside
//! it. Every call from async code goes through [`AsyncStore`], which runs it on the blocking pool
//! so the store never blocks the executor.

mod accounts;
mod live;
mod sled;
mod tus;
mod webhooks;

use std::sync::Arc;

pub use self::accounts::Usage;
pub use self::sled::Store;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] ::sled::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("cannot encode record: {0}")]
    Encode(String),
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
