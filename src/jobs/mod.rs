//! Jobs: one runner for a transcode end to end (`runner`, used by `cascade transcode` and the
//! server alike), the failure codes (`failure`), and the server's queue with its workers
//! (`worker`). The queue lives in the store; on a shared database a claim is a lease the
//! heartbeat renews (`worker::spawn_heartbeat`), and other processes' changes arrive at once
//! (`worker::spawn_follower`).

pub mod failure;
pub mod runner;
pub(crate) mod worker;

pub use worker::{cancel, spawn_follower, spawn_heartbeat, spawn_workers, start_streamed, try_take_slot};
