//! Why a file request failed, typed: the status mapping in `app::error`
//! matches on these variants (exhaustively), so a timeout stays a timeout
//! from the socket to the client's 504.

use std::sync::Arc;

use crate::origin::OriginError;

pub use crate::storage::verify::Mismatch;

/// Why a download (or a stream-through) failed. Cheap to clone: every
/// waiter of a download gets the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FileError {
    /// The upstream failed: timeout, refused, bad status, cut body.
    #[error(transparent)]
    Origin(Arc<OriginError>),
    /// The bytes are not the advertised ones.
    #[error("verification failed: {0}")]
    Verify(#[source] Mismatch),
    /// Writing the cache or staging file failed (disk full, I/O error).
    #[error("cache write failed: {0}")]
    Local(#[source] Arc<std::io::Error>),
    /// The upstream announced no length: streamed through instead.
    #[error("the upstream did not send a Content-Length")]
    NoLength,
    /// Every download or open slot is taken: try again shortly.
    #[error("too many upstream transfers at once")]
    Busy,
}

impl From<OriginError> for FileError {
    fn from(e: OriginError) -> FileError {
        FileError::Origin(Arc::new(e))
    }
}

impl From<Mismatch> for FileError {
    fn from(m: Mismatch) -> FileError {
        FileError::Verify(m)
    }
}

impl FileError {
    pub fn local(e: std::io::Error) -> FileError {
        FileError::Local(Arc::new(e))
    }
}
