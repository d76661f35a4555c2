//! Jobs: running one transcode end to end, and the persistent queue with its workers.

pub mod execute;
pub mod worker;
