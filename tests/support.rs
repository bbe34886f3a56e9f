//! Shared helpers: paths, running the binary, reading fixture expectations.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (the example project).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

/// Runs the `ebb` binary in `dir` with `args`.
pub fn ebb(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(args)
        .current_dir(dir)
        .env_remove("EBB_PROJECT")
        .env("NO_COLOR", "1")
        .output()
        .expect("the ebb binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One expected diagnostic: code, line, column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expect {
    pub code: String,
    pub line: usize,
    pub col: usize,
}

/// The `# expect: CODE LINE:COL` lines at the top of a fixture.
pub fn expectations(text: &str) -> Vec<Expect> {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# expect:"))
        .map(|rest| {
            let mut parts = rest.split_whitespace();
            let code = parts.next().expect("a code").to_string();
            let (line, col) = parts.next().expect("LINE:COL").split_once(':').expect("LINE:COL");
            Expect {
                code,
                line: line.parse().expect("line"),
                col: col.parse().expect("col"),
            }
        })
        .collect()
}

/// A copy of a directory tree in a fresh temporary directory.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A temporary project with a PostgreSQL connection `pg` (to `url`), a file connection
/// `out`, and `model` as `models/m.yaml`.
pub fn pg_project(url: &str, model: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ebb.yaml"),
        format!("version: 1\nconnections:\n  pg:\n    type: postgres\n    url: {url}\n  out:\n    type: file\n    path: out\n"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::write(dir.path().join("models/m.yaml"), model).unwrap();
    dir
}

/// A client of the test PostgreSQL (`EBB_TEST_POSTGRES_URL`), its connection driven on `rt`.
/// Fails, never skips, when the server is absent.
pub fn pg_client(rt: &tokio::runtime::Runtime) -> tokio_postgres::Client {
    let url = crate::source_postgres::url();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL must be running at {url} (EBB_TEST_POSTGRES_URL): {e}"));
        tokio::spawn(conn);
        client
    })
}
