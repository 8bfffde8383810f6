//! Whether `[queue] path` is usable: checked without touching the disk
//! (`check-config`), and made ready by `serve` before the queue opens.

use super::Config;
use std::path::Path;

impl Config {
    /// Whether the queue directory is usable, without changing anything on disk (this is
    /// `check-config`'s check, which must not create what it checks): it exists and is
    /// writable, or its nearest existing parent is a writable directory, so `serve` can
    /// create it. Permissions are those of this process (its effective user): run as
    /// root, only a read-only filesystem fails.
    pub fn check_queue_path(&self) -> Result<(), String> {
        let path = &self.queue.path;
        let show = path.display();
        // The nearest existing ancestor: `path` itself when it exists.
        let mut existing = path.as_path();
        let meta = loop {
            let probe = if existing.as_os_str().is_empty() {
                Path::new(".")
            } else {
                existing
            };
            match std::fs::metadata(probe) {
                Ok(m) => break m,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) =>
                {
                    match existing.parent() {
                        Some(p) => existing = p,
                        None => return Err(format!("queue.path: cannot check {show}: {e}")),
                    }
                }
                Err(e) => return Err(format!("queue.path: cannot check {show}: {e}")),
            }
        };
        let shown = if existing.as_os_str().is_empty() {
            Path::new(".").display()
        } else {
            existing.display()
        };
        if existing == path.as_path() {
            if !meta.is_dir() {
                return Err(format!("queue.path: {show} is not a directory"));
            }
            return writable_dir(existing)
                .map_err(|e| format!("queue.path: {show} is not writable ({e})"));
        }
        if !meta.is_dir() {
            return Err(format!(
                "queue.path: {show} cannot be created: {shown} is not a directory"
            ));
        }
        writable_dir(existing).map_err(|e| {
            format!("queue.path: {show} does not exist and cannot be created: {shown} is not writable ({e})")
        })
    }

    /// Creates the queue directory if needed and proves it writable (`serve`, before
    /// opening the queue: a clear message instead of sled's).
    pub fn prepare_queue_dir(&self) -> Result<(), String> {
        let path = &self.queue.path;
        std::fs::create_dir_all(path)
            .map_err(|e| format!("queue.path: cannot create {}: {e}", path.display()))?;
        let probe = path.join(".write-probe");
        std::fs::write(&probe, b"ok")
            .map_err(|e| format!("queue.path: {} is not writable: {e}", path.display()))?;
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }
}

/// A directory this process could create entries in (write and search permission), asked
/// of the kernel (`faccessat` with the effective ids) instead of tried.
#[cfg(unix)]
fn writable_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the path holds a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let r = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn writable_dir(dir: &Path) -> std::io::Result<()> {
    if std::fs::metadata(dir)?.permissions().readonly() {
        Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
    } else {
        Ok(())
    }
}
