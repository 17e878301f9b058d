//! The single-instance lock: one writer per state DB, held for the command's life.
//!
//! Depends on no other farmsync module. Only [`crate::commands`] and [`crate::daemon`] take
//! it; the store and the sync never do, and the commands that only read run without it.
//!
//! An exclusive, non-blocking OS lock on `<state path>.lock`; the OS releases it when the
//! holder dies, so a killed farmsync never blocks the next one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("another farmsync ({holder}) is using {state}")]
    Held { holder: String, state: PathBuf },
    /// The lock file could not be opened.
    #[error("cannot open the lock file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock beside `state_path` without waiting, and records this process's pid in it.
    pub fn acquire(state_path: &Path) -> Result<InstanceLock, LockError> {
        let mut name = state_path.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "pid unknown".to_owned(),
                };
                return Err(LockError::Held {
                    holder,
                    state: state_path.to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(InstanceLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_acquisition_fails_naming_the_holder_then_succeeds_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        let first = InstanceLock::acquire(&state).unwrap();
        let err = InstanceLock::acquire(&state).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("another farmsync (pid {})", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&state.display().to_string()), "{text}");
        drop(first);
        let again = InstanceLock::acquire(&state).unwrap();
        assert!(again.path().ends_with("state.db.lock"));
    }
}
