//! Atomic file writes: readers (a browser refreshing `images/`, a copy of the output folder)
//! never see a half-written file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{ReportError, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder, then renames it over
/// `path`. Creates the parent folder when it is missing.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| ReportError::io(&parent, e))?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // The process id keeps two processes writing the same report from sharing a temp file.
    let tmp = parent.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp).map_err(|e| ReportError::io(&tmp, e))?;
        file.write_all(bytes).map_err(|e| ReportError::io(&tmp, e))?;
        file.sync_all().map_err(|e| ReportError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| ReportError::io(path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
