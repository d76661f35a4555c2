//! The application error: a stable machine-readable code and the HTTP status, chosen here only.

use warp::http::StatusCode;

/// Every error the HTTP layer can answer with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("too many videos are waiting to be processed ({0} queued); try again later")]
    QueueFull(usize),
    #[error("{0} uploads are arriving already; try again later")]
    TooManyUploads(usize),
    #[error("{0}")]
    TooManySubscribers(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    UnsupportedInput(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("not enough free disk space to accept this upload ({free} bytes free)")]
    InsufficientStorage { free: u64 },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Locked(String),
    #[error("the chunk does not match its Upload-Checksum; it was discarded")]
    ChecksumMismatch,
    #[error("this server speaks tus 1.0.0: send `Tus-Resumable: 1.0.0`")]
    TusVersion,
    #[error("{0}")]
    QuotaFull(String),
    #[error("this upload is larger than what is left of your quota ({left} bytes)")]
    OverQuota { left: u64 },
    #[error("{0}")]
    Unauthorized(String),
    #[error("too many failed logins; try again later")]
    TooManyAttempts,
    #[error("range not satisfiable (length {0})")]
    RangeNotSatisfiable(u64),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Not available yet; asking again later may succeed (a blocking playlist request that
    /// timed out).
    #[error("{0}")]
    Unavailable(String),
    /// Well-formed but not something the server can take (a WHIP offer without usable video).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Token(#[from] crate::auth::token::TokenError),
    #[error("storage error: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// Stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::NotFound(_) => "not_found",
            AppError::BadRequest(_) => "bad_request",
            AppError::TooLarge { .. } | AppError::BodyTooLarge { .. } => "payload_too_large",
            AppError::QueueFull(_) => "queue_full",
            AppError::TooManyUploads(_) => "too_many_uploads",
            AppError::TooManySubscribers(_) => "too_many_subscribers",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::UnsupportedInput(_) => "unsupported_input",
            AppError::RequestTimeout(_) => "request_timeout",
            AppError::InsufficientStorage { .. } => "insufficient_storage",
            AppError::Forbidden(_) => "forbidden",
            AppError::Conflict(_) => "conflict",
            AppError::Gone(_) => "gone",
            AppError::Locked(_) => "locked",
            AppError::ChecksumMismatch => "checksum_mismatch",
            AppError::TusVersion => "unsupported_tus_version",
            AppError::QuotaFull(_) => "quota_exceeded",
            AppError::OverQuota { .. } => "over_quota",
            AppError::Unauthorized(_) => "unauthorized",
            AppError::TooManyAttempts => "too_many_attempts",
            AppError::RangeNotSatisfiable(_) => "range_not_satisfiable",
            AppError::ShuttingDown => "shutting_down",
            AppError::Unavailable(_) => "unavailable",
            AppError::Unprocessable(_) => "unprocessable",
            AppError::Token(_) => "forbidden",
            AppError::Store(crate::store::StoreError::Unavailable(_)) => "database_unavailable",
            AppError::Store(_) => "store_error",
            AppError::Internal(_) => "internal_error",
        }
    }

    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::TooLarge { .. } | AppError::BodyTooLarge { .. } | AppError::OverQuota { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Gone(_) => StatusCode::GONE,
            AppError::Locked(_) => StatusCode::LOCKED,
            // tus's checksum extension: 460 Checksum Mismatch.
            AppError::ChecksumMismatch => StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
            AppError::TusVersion => StatusCode::PRECONDITION_FAILED,
            AppError::QueueFull(_) | AppError::TooManyUploads(_) | AppError::TooManySubscribers(_) | AppError::TooManyAttempts => {
                StatusCode::TOO_MANY_REQUESTS
            }
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::UnsupportedMediaType(_) | AppError::UnsupportedInput(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::InsufficientStorage { .. } | AppError::QuotaFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            AppError::Forbidden(_) | AppError::Token(_) => StatusCode::FORBIDDEN,
            AppError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            AppError::ShuttingDown | AppError::Unavailable(_) | AppError::Store(crate::store::StoreError::Unavailable(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Store(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl warp::reject::Reject for AppError {}

impl From<crate::auth::accounts::AccountError> for AppError {
    fn from(e: crate::auth::accounts::AccountError) -> Self {
        match e {
            crate::auth::accounts::AccountError::Hash(m) => AppError::Internal(m),
            other => AppError::BadRequest(other.to_string()),
        }
    }
}

impl From<std::io::Error> for AppError {
    fn from(e: std::io::Error) -> Self {
        AppError::Internal(e.to_string())
    }
}
