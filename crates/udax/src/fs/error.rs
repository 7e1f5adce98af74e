//! The file-system error type: one variant per errno a caller can see.

use crate::device::DeviceError;

/// Errors returned by the file-system API. Every variant maps to one errno
/// ([`Error::errno`]); an error leaves the file system unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("is a directory")]
    IsDir,
    #[error("not a directory")]
    NotDir,
    #[error("file name too long (max 255 bytes)")]
    NameTooLong,
    #[error("no space left on device")]
    NoSpace,
    #[error("no free inodes left on device")]
    NoInodes,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("bad file handle (not open for this access)")]
    BadFd,
    #[error("operation not supported: {0}")]
    NotSupported(&'static str),
    #[error("resource busy: {0}")]
    Busy(String),
    #[error("file too large")]
    FileTooBig,
    #[error("too many links")]
    TooManyLinks,
    /// More than [`crate::fs::MAX_SYMLINKS`] symbolic links in one path,
    /// or `O_NOFOLLOW` of one (`ELOOP`).
    #[error("too many levels of symbolic links")]
    Loop,
    /// The path leaves the file system: through a symbolic link, or `..`
    /// at its root. `path` is where resolution goes on, outside it: an
    /// absolute path (on the host: a link's absolute target, then the rest
    /// of the path), or one that begins with `..`, relative to the file
    /// system's root (its mount point). A caller that knows the mount
    /// point (the shim) resolves it there, as the kernel crosses a mount;
    /// others see `EXDEV`.
    #[error("the path leaves the file system; it goes on at {path}")]
    Escape { path: String },
    #[error("cross-device link or rename")]
    CrossDevice,
    #[error("read-only file system")]
    ReadOnly,
    #[error("interrupted")]
    Interrupted,
    #[error("metadata corrupted: {what} at device offset {device_offset:#x}")]
    Corrupted { what: String, device_offset: u64 },
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("permission denied: {0}")]
    Access(&'static str),
    /// `ENXIO`: a socket file opened as a file.
    #[error("no such device or address: {0}")]
    NoDevice(&'static str),
    #[error("system call failed: {0}")]
    Io(std::io::Error),
    #[error(transparent)]
    Format(crate::format::FormatError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// No owner answers for the device, or it went away (`ENOTCONN`).
    #[error("not connected to the device's owner: {0}")]
    NotConnected(String),
    /// An error the device's owner reported, with an errno that has no
    /// variant of its own.
    #[error("{message}")]
    Remote { errno: i32, message: String },
}

impl Error {
    /// The errno a C caller (the LD_PRELOAD shim, the CLI) reports.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::Exists => libc::EEXIST,
            Error::NotEmpty => libc::ENOTEMPTY,
            Error::IsDir => libc::EISDIR,
            Error::NotDir => libc::ENOTDIR,
            Error::NameTooLong => libc::ENAMETOOLONG,
            Error::NoSpace | Error::NoInodes => libc::ENOSPC,
            Error::Invalid(_) => libc::EINVAL,
            Error::BadFd => libc::EBADF,
            Error::NotSupported(_) => libc::EOPNOTSUPP,
            Error::Busy(_) => libc::EBUSY,
            Error::FileTooBig => libc::EFBIG,
            Error::TooManyLinks => libc::EMLINK,
            Error::Loop => libc::ELOOP,
            Error::Escape { .. } => libc::EXDEV,
            Error::CrossDevice => libc::EXDEV,
            Error::ReadOnly => libc::EROFS,
            Error::Interrupted => libc::EINTR,
            Error::Corrupted { .. } => libc::EUCLEAN,
            Error::NotPermitted(_) => libc::EPERM,
            Error::Access(_) => libc::EACCES,
            Error::NoDevice(_) => libc::ENXIO,
            Error::Io(e) => e.raw_os_error().unwrap_or(match e.kind() {
                std::io::ErrorKind::StorageFull => libc::ENOSPC,
                _ => libc::EIO,
            }),
            Error::Format(_) => libc::EINVAL,
            Error::Device(e) => e.errno(),
            Error::NotConnected(_) => libc::ENOTCONN,
            Error::Remote { errno, .. } => *errno,
        }
    }

    /// The error an owner reported as `errno` and `message`: the variant of
    /// that errno where it carries no text, else [`Error::Remote`].
    pub fn from_remote(errno: i32, message: String) -> Error {
        match errno {
            ESCAPE_ERRNO => Error::Escape { path: message },
            libc::ELOOP => Error::Loop,
            libc::ENOENT => Error::NotFound,
            libc::EEXIST => Error::Exists,
            libc::ENOTEMPTY => Error::NotEmpty,
            libc::EISDIR => Error::IsDir,
            libc::ENOTDIR => Error::NotDir,
            libc::ENAMETOOLONG => Error::NameTooLong,
            libc::ENOSPC => Error::NoSpace,
            libc::EBADF => Error::BadFd,
            libc::EFBIG => Error::FileTooBig,
            libc::EMLINK => Error::TooManyLinks,
            libc::EXDEV => Error::CrossDevice,
            libc::EROFS => Error::ReadOnly,
            libc::EINTR => Error::Interrupted,
            _ => Error::Remote { errno, message },
        }
    }
}

/// The error number an owner sends for [`Error::Escape`] (with the path
/// as its message): no errno has it, so no other error is taken for one.
pub const ESCAPE_ERRNO: i32 = 0x4553_4350;

impl Error {
    /// The errno and message an owner sends for this error
    /// ([`Error::from_remote`] reads them back).
    pub fn to_remote(&self) -> (i32, String) {
        match self {
            Error::Escape { path } => (ESCAPE_ERRNO, path.clone()),
            e => (e.errno(), e.to_string()),
        }
    }
}

/// Result alias for the file-system API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::format::FormatError> for Error {
    fn from(e: crate::format::FormatError) -> Self {
        match e {
            crate::format::FormatError::Corrupted {
                what,
                device_offset,
            } => Error::Corrupted {
                what,
                device_offset,
            },
            other => Error::Format(other),
        }
    }
}

impl From<crate::journal::JournalError> for Error {
    fn from(e: crate::journal::JournalError) -> Self {
        use crate::journal::JournalError as J;
        match e {
            J::Device(d) => Error::Device(d),
            J::Format(f) => f.into(),
            J::LogFull => Error::Busy("metadata log full".into()),
            J::CheckpointTooBig { .. } => Error::NoSpace,
            J::NoCheckpoints => Error::Invalid("no checkpoint slots in this format"),
        }
    }
}

impl From<crate::meta::MetaError> for Error {
    fn from(e: crate::meta::MetaError) -> Self {
        use crate::meta::MetaError;
        match e {
            MetaError::Corrupt { offset, what } => Error::Corrupted {
                what,
                device_offset: offset,
            },
            MetaError::NoSpace => Error::NoSpace,
            MetaError::Device(d) => Error::Device(d),
            MetaError::TooLarge => Error::Invalid("metadata value too large"),
        }
    }
}
