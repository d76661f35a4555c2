//! Jobs: one runner for a transcode end to end (`runner`, used by `cascade transcode` and the
//! server alike), the failure codes (`failure`), and the server's queue with its workers
//! (`worker`). The queue lives in the store; the scale-out issue turns it into leases.

pub mod failure;
pub mod runner;
pub(crate) mod worker;

pub use worker::{cancel, spawn_workers, start_streamed, try_take_slot};
