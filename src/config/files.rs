//! Reading config files that anyone with a pull request can write.
//!
//! `ebb.yaml` and the model files are read only if they are regular files inside the
//! project (a symbolic link is followed, but its target must be inside the project too),
//! at most [`MAX_FILE_BYTES`] long, and YAML text (UTF-8 without control characters).
//! A link to `/proc/self/environ` or to a secrets file elsewhere, `/dev/zero`, a FIFO or
//! a link loop is refused before a byte is read, and bytes that are not text are never
//! quoted back: the error says where they are, not what they are.
//!
//! It also owns finding them: the project directory above a path ([`find_project`]), the
//! model files below a directory ([`model_files`]), and how a file's path is shown
//! ([`display_path`]).

use super::PROJECT_FILE;
use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A project that could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no `ebb.yaml` in `{0}` or any directory above it")]
    NoProject(PathBuf),
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The directory holding `ebb.yaml`: `start` or the closest parent that has one.
pub fn find_project(start: &Path) -> Result<PathBuf, LoadError> {
    let start = if start.as_os_str().is_empty() {
        Path::new(".")
    } else {
        start
    };
    let abs = std::path::absolute(start).map_err(|source| LoadError::Io {
        path: start.to_path_buf(),
        source,
    })?;
    let mut dir = Some(abs.as_path());
    while let Some(d) = dir {
        if d.join(PROJECT_FILE).is_file() {
            return Ok(d.to_path_buf());
        }
        dir = d.parent();
    }
    Err(LoadError::NoProject(start.to_path_buf()))
}

/// How a path is shown: relative to the working directory when it is below it.
pub fn display_path(p: &Path) -> PathBuf {
    let cwd = std::env::current_dir().ok();
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match cwd.as_deref().and_then(|c| abs.strip_prefix(c).ok()) {
        Some(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
        _ => p.to_path_buf(),
    }
}

/// The model files below `dir` that can be read: `*.yaml` and `*.yml` regular files (links
/// followed), sorted. Never opens a file, never follows a link out of the project (the
/// closest directory above `dir` with an `ebb.yaml`), and never loops. `validate` also
/// reports the entries this leaves out (a FIFO, a link out of the project).
pub fn model_files(dir: &Path) -> Vec<PathBuf> {
    let root = find_project(dir).unwrap_or_else(|_| dir.to_path_buf());
    scan_model_files(&root, dir)
        .into_iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
        .collect()
}

/// Every `*.yaml` and `*.yml` entry below `dir`, whatever it is (a regular file, a link
/// going anywhere, a FIFO), sorted. Directories are entered once each (a link loop ends)
/// and only inside `root`; entries starting with `.` are skipped.
pub fn scan_model_files(root: &Path, dir: &Path) -> Vec<PathBuf> {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        match std::fs::canonicalize(&d) {
            Ok(real) if real.starts_with(&root) && seen.insert(real.clone()) => {}
            _ => continue,
        }
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let is_yaml = matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"));
            // `metadata` follows links; a loop or a dangling link is an error, not a dir.
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => stack.push(p),
                _ if is_yaml => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// The largest config file read: 1 MiB. The largest hand-written model files are tens of
/// KB; a generated one with a thousand models is a few hundred KB.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why a config file was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// The file cannot be or must not be read: the message says why (no file content).
    Refused(String),
    /// The file was read but is not YAML text; 1-based line and column of the first bad
    /// character and what it is (never the bytes themselves).
    NotText { line: usize, col: usize, what: String },
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Refused(m) => f.write_str(m),
            FileError::NotText { line, col, what } => {
                write!(f, "it is not YAML text: {what} at line {line}, column {col}")
            }
        }
    }
}

/// What kind of file `meta` describes, in words.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
    }
    "not a regular file"
}

/// Where `path` really is: symbolic links resolved, checked to stay inside `root`
/// (itself resolved), and a regular file. Never opens the file.
pub fn resolve(root: &Path, path: &Path) -> Result<(PathBuf, std::fs::Metadata), FileError> {
    let link = std::fs::symlink_metadata(path).map_err(|e| FileError::Refused(io_reason(&e)))?;
    let real = std::fs::canonicalize(path).map_err(|e| {
        if e.raw_os_error() == Some(ELOOP) {
            FileError::Refused("it is a symbolic link that loops".into())
        } else if link.file_type().is_symlink() && e.kind() == std::io::ErrorKind::NotFound {
            FileError::Refused("it is a symbolic link to a file that does not exist".into())
        } else {
            FileError::Refused(io_reason(&e))
        }
    })?;
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    if !real.starts_with(&root) {
        return Err(FileError::Refused(format!(
            "it is a link to `{}`, outside the project; ebb reads config files only inside the project directory",
            real.display()
        )));
    }
    let meta = std::fs::metadata(&real).map_err(|e| FileError::Refused(io_reason(&e)))?;
    if !meta.is_file() {
        return Err(FileError::Refused(format!(
            "it is {}; config files must be regular files",
            kind_of(&meta)
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(FileError::Refused(too_big(meta.len())));
    }
    Ok((real, meta))
}

fn too_big(len: u64) -> String {
    format!(
        "it is {} bytes; a config file is at most {} bytes (1 MiB): split the models over several files",
        len, MAX_FILE_BYTES
    )
}

/// `ELOOP` on Linux and the BSDs' value differ; both are "too many levels of symbolic links".
#[cfg(target_os = "linux")]
const ELOOP: i32 = 40;
#[cfg(not(target_os = "linux"))]
const ELOOP: i32 = 62;

fn io_reason(e: &std::io::Error) -> String {
    crate::diagnostics::lowercase_first(&e.to_string())
}

/// The bytes of the config file `path` under the project `root`, at most
/// [`MAX_FILE_BYTES`], after the checks of [`resolve`]. The file is opened without
/// blocking (a FIFO swapped in after the check cannot stall the caller) and checked again
/// once open.
pub fn read_bytes(root: &Path, path: &Path) -> Result<Vec<u8>, FileError> {
    let (real, _) = resolve(root, path)?;
    let file = open_nonblocking(&real).map_err(|e| FileError::Refused(io_reason(&e)))?;
    let meta = file.metadata().map_err(|e| FileError::Refused(io_reason(&e)))?;
    if !meta.is_file() {
        return Err(FileError::Refused(format!(
            "it is {}; config files must be regular files",
            kind_of(&meta)
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len().min(MAX_FILE_BYTES) as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::Refused(io_reason(&e)))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(FileError::Refused(too_big(bytes.len() as u64)));
    }
    Ok(bytes)
}

#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "s390x",
        target_arch = "powerpc64",
        target_arch = "loongarch64"
    )
))]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    const O_NONBLOCK: i32 = 0o4000;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
}

#[cfg(not(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "s390x",
        target_arch = "powerpc64",
        target_arch = "loongarch64"
    )
)))]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// The text of the config file `path` under `root`: [`read_bytes`], then UTF-8 without
/// control characters other than tab, line feed and carriage return (what YAML allows).
pub fn read_text(root: &Path, path: &Path) -> Result<String, FileError> {
    text_of(read_bytes(root, path)?)
}

/// `bytes` as YAML text, or where they stop being text.
pub fn text_of(bytes: Vec<u8>) -> Result<String, FileError> {
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = e.utf8_error().valid_up_to();
            let (line, col) = line_col(std::str::from_utf8(&e.as_bytes()[..good]).unwrap_or_default());
            return Err(FileError::NotText {
                line,
                col,
                what: "a byte that is not UTF-8".into(),
            });
        }
    };
    if let Some((at, c)) = text
        .char_indices()
        .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        let (line, col) = line_col(&text[..at]);
        let what = match c {
            '\0' => "a NUL byte".to_string(),
            '\x1b' => "an escape character (U+001B)".to_string(),
            c => format!("the control character U+{:04X}", c as u32),
        };
        return Err(FileError::NotText { line, col, what });
    }
    Ok(text)
}

/// 1-based line and column just after `before`.
fn line_col(before: &str) -> (usize, usize) {
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_yaml_is_located_not_quoted() {
        assert_eq!(
            text_of(b"a: 1\n\tb: \"x\"\r\n".to_vec()).unwrap(),
            "a: 1\n\tb: \"x\"\r\n"
        );
        let e = text_of(b"a: 1\nb: SECRET=x\0y\n".to_vec()).unwrap_err();
        assert_eq!(
            e,
            FileError::NotText {
                line: 2,
                col: 12,
                what: "a NUL byte".into()
            }
        );
        assert!(!e.to_string().contains("SECRET"));
        let e = text_of(b"ok: 1\nx: \xff\xfe".to_vec()).unwrap_err();
        assert!(matches!(e, FileError::NotText { line: 2, col: 4, .. }), "{e:?}");
        let e = text_of("x: \u{1b}[2J".as_bytes().to_vec()).unwrap_err();
        assert!(e.to_string().contains("escape character"), "{e}");
    }
}
