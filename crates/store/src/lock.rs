//! One daemon per store: `tallyd run` and `tally-demo` hold an exclusive
//! `flock` on `data_dir/tally.lock` for their whole life, with their pid
//! written in the file, so that a second daemon on the same `data_dir`
//! refuses to start (two daemons would both call the platforms and both
//! write the quarterly reports) and names the one already running.
//!
//! The lock is advisory and taken with `flock`, which the kernel drops when
//! the process dies however it dies: a daemon killed with SIGKILL leaves the
//! file behind but never a stale lock, so the file is never removed.
//!
//! `tallyd collect` does not take it (backfilling beside the daemon is how
//! operators work); it only asks [`DataDirLock::holder`] whether a daemon
//! runs, to tell the user that this daemon picks the new data up.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

/// The lock file's name inside `data_dir`.
pub const LOCK_FILE: &str = "tally.lock";

/// How long [`DataDirLock::acquire`] retries a lock held by someone else
/// before it gives up: long enough to outlast the instant a `tallyd collect`
/// holds the lock shared in [`DataDirLock::holder`], far too short to wait
/// for a daemon.
const CONTENDED_RETRY: Duration = Duration::from_millis(1000);
const RETRY_STEP: Duration = Duration::from_millis(50);

#[derive(Debug, Error)]
pub enum LockError {
    #[error(
        "data_dir {dir} is in use by another tallyd ({holder}, holding {lock}): one daemon per store, or both would call the platforms and write the reports; stop it first, or give this one another daemon.data_dir"
    )]
    Held {
        dir: PathBuf,
        lock: PathBuf,
        holder: Holder,
    },
    #[error("cannot lock data_dir {dir} through {lock}")]
    Io {
        dir: PathBuf,
        lock: PathBuf,
        source: std::io::Error,
    },
}

impl LockError {
    /// Another daemon holds the lock: the operator's to sort out (exit 1).
    pub fn is_user_error(&self) -> bool {
        matches!(self, LockError::Held { .. })
    }
}

/// Who holds a data directory's lock, as far as its file tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// The pid the holder wrote; `None` while it has not written it yet.
    pub pid: Option<u32>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}"),
            None => f.write_str("pid not known yet"),
        }
    }
}

/// The exclusive lock on a data directory; released when dropped (and by
/// the kernel when the process dies).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock of `dir` (created if missing) and writes this
    /// process's pid into it, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            lock: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        // Without write access (a read-only data_dir) an existing lock file
        // still locks: flock needs no write access. The pid then stays out.
        let (mut file, writable) = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(file) => (file, true),
            Err(e) => match File::open(&path) {
                Ok(file) => (file, false),
                Err(_) => return Err(io(e)),
            },
        };
        let mut waited = Duration::ZERO;
        loop {
            match try_lock(&file, true) {
                Ok(true) => break,
                Ok(false) if waited < CONTENDED_RETRY => {
                    std::thread::sleep(RETRY_STEP);
                    waited += RETRY_STEP;
                }
                Ok(false) => {
                    return Err(LockError::Held {
                        dir: dir.to_path_buf(),
                        lock: path.clone(),
                        holder: read_holder(&mut file),
                    });
                }
                Err(e) => return Err(io(e)),
            }
        }
        if writable {
            let written = file
                .set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| writeln!(file, "{}", std::process::id()));
            if let Err(e) = written {
                // The lock holds without the pid; a second daemon's message
                // just cannot name this one.
                tracing::warn!(lock = %path.display(), error = %e, "cannot write the pid into the lock file");
            }
        }
        Ok(DataDirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a daemon holds the lock of `dir` now, and who. Takes the lock
    /// shared for an instant to find out, without creating anything: `None`
    /// when no lock file exists or nobody holds it.
    pub fn holder(dir: &Path) -> Option<Holder> {
        let mut file = File::open(dir.join(LOCK_FILE)).ok()?;
        match try_lock(&file, false) {
            Ok(false) => Some(read_holder(&mut file)),
            // Dropping the file releases the shared lock at once.
            Ok(true) | Err(_) => None,
        }
    }
}

fn read_holder(file: &mut File) -> Holder {
    let mut text = String::new();
    let pid = file
        .rewind()
        .and_then(|()| file.read_to_string(&mut text))
        .ok()
        .and_then(|_| text.trim().parse().ok());
    Holder { pid }
}

/// `flock` without blocking: `Ok(false)` when someone else holds it.
#[cfg(unix)]
fn try_lock(file: &File, exclusive: bool) -> std::io::Result<bool> {
    use rustix::fs::{FlockOperation, flock};
    let operation = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    match flock(file, operation) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(unix))]
fn try_lock(file: &File, exclusive: bool) -> std::io::Result<bool> {
    let locked = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match locked {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_naming_the_first_holder() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DataDirLock::acquire(&data).unwrap();
        assert_eq!(
            std::fs::read_to_string(first.path()).unwrap().trim(),
            std::process::id().to_string()
        );
        // flock conflicts between two open files even within one process,
        // which stands in for a second tallyd here.
        let err = DataDirLock::acquire(&data).unwrap_err();
        assert!(err.is_user_error());
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&data.display().to_string()), "{text}");
        assert_eq!(
            DataDirLock::holder(&data),
            Some(Holder {
                pid: Some(std::process::id())
            })
        );
        drop(first);
        assert_eq!(DataDirLock::holder(&data), None);
        let again = DataDirLock::acquire(&data).unwrap();
        drop(again);
    }

    #[test]
    fn no_lock_file_means_no_holder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(DataDirLock::holder(dir.path()), None);
        assert!(!dir.path().join(LOCK_FILE).exists());
    }
}
