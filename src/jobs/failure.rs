//! Why a job failed: one enum whose `code()` is what the video record and the README's table of
//! failure codes say. Add a failure here, give it a code, and document the code in the README.

use crate::probe::ProbeError;
use crate::transcode::TranscodeError;

/// Every way a job can end without output.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobFailure {
    /// The source is not something Cascade transcodes (empty, not a video, absurd header).
    #[error("{0}")]
    Probe(#[from] ProbeError),
    /// Every back end that was tried failed; this is the last one's error.
    #[error("{0}")]
    Transcode(#[from] TranscodeError),
    /// The job was interrupted (crash, kill) this many times in a row.
    #[error("the job was interrupted {0} times; giving up")]
    TooManyAttempts(u32),
    /// A streamed upload was cut off by a server stop: its file never completed.
    #[error("the upload did not complete (the server stopped while it was arriving); upload the file again")]
    UploadIncomplete,
    /// The record has no key (the store lost it).
    #[error("the video's key is missing")]
    KeyMissing,
    /// A live publisher sent video in a codec the live ladder does not take (H.264 only).
    #[error("{0}")]
    LiveCodec(String),
    /// A live publisher sent no video.
    #[error("{0}")]
    LiveNoVideo(String),
    /// The server stopped (crashed) while the broadcast was on air.
    #[error("the server stopped while the broadcast was on air")]
    LiveInterrupted,
}

impl JobFailure {
    /// Stable machine-readable code, stored in the record's `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            JobFailure::Probe(e) => e.code(),
            JobFailure::Transcode(e) => e.code(),
            JobFailure::TooManyAttempts(_) => "too_many_attempts",
            JobFailure::UploadIncomplete => "upload_incomplete",
            JobFailure::KeyMissing => "internal_error",
            JobFailure::LiveCodec(_) => "unsupported_codec",
            JobFailure::LiveNoVideo(_) => "no_video",
            JobFailure::LiveInterrupted => "broadcast_interrupted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code a failed video can carry is in the README's table, and the table lists no code
    /// that nothing produces.
    #[test]
    fn codes_match_the_readme() {
        let all = [
            JobFailure::Probe(ProbeError::Empty),
            JobFailure::Probe(ProbeError::Unsupported(String::new())),
            JobFailure::Probe(ProbeError::NoVideo),
            JobFailure::Probe(ProbeError::Absurd(String::new())),
            JobFailure::Probe(ProbeError::Internal(String::new())),
            JobFailure::Transcode(TranscodeError::Build(String::new())),
            JobFailure::Transcode(TranscodeError::Runtime(String::new())),
            JobFailure::Transcode(TranscodeError::Stalled(1)),
            JobFailure::Transcode(TranscodeError::TimedOut(1)),
            JobFailure::Transcode(TranscodeError::Killed(String::new())),
            JobFailure::Transcode(TranscodeError::Packaging(String::new())),
            JobFailure::Transcode(TranscodeError::Storage(String::new())),
            JobFailure::TooManyAttempts(3),
            JobFailure::UploadIncomplete,
            JobFailure::KeyMissing,
            JobFailure::LiveCodec(String::new()),
            JobFailure::LiveNoVideo(String::new()),
            JobFailure::LiveInterrupted,
        ];
        let readme = include_str!("../../README.md");
        let table = readme
            .split("Error codes of failed videos")
            .nth(1)
            .and_then(|t| t.split("\n\n").next())
            .expect("the README lists the failure codes");
        let listed: std::collections::BTreeSet<&str> =
            table.split('`').skip(1).step_by(2).filter(|c| c.chars().all(|c| c.is_ascii_lowercase() || c == '_')).collect();
        let produced: std::collections::BTreeSet<&str> = all.iter().map(JobFailure::code).collect();
        assert_eq!(listed, produced, "README failure codes vs JobFailure::code()");
    }
}
