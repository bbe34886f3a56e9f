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

/// `ebb run MODEL ARGS --format json` in `dir`, retries 5 ms apart, with `env` set: the
/// exit code and the run's summary.
pub fn run_json(dir: &Path, model: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ebb"));
    cmd.args(["run", model, "--format", "json"])
        .args(args)
        .current_dir(dir)
        .env_remove("EBB_PROJECT")
        .env("NO_COLOR", "1")
        .env("EBB_RETRY_BASE_MS", "5");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the ebb binary runs");
    let code = out.status.code().unwrap_or(-1);
    let summary: serde_json::Value = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("exit {code}: {e}\nstdout: {}\nstderr: {}", stdout(&out), stderr(&out)));
    (code, summary["runs"][0].clone())
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

/// Whether the test PostgreSQL (`EBB_TEST_POSTGRES_URL`, else 127.0.0.1:5432) accepts
/// connections, checked once per test process.
///
/// When it does not, a run that requires it (`EBB_REQUIRE_POSTGRES` or `CI` set, as
/// `.ci/run` does) fails here; any other run writes one loud line straight to the terminal
/// (libtest captures `eprintln!`, not a direct write) and the caller skips its test through
/// [`require_postgres!`].
pub fn postgres() -> bool {
    static UP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *UP.get_or_init(|| {
        let url = crate::source_postgres::url();
        let reachable = postgres_address(&url)
            .is_some_and(|addr| std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok());
        if reachable {
            return true;
        }
        let required = ["EBB_REQUIRE_POSTGRES", "CI"]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false"));
        assert!(
            !required,
            "PostgreSQL is required here (EBB_REQUIRE_POSTGRES or CI is set) but nothing answers at {url} \
             (EBB_TEST_POSTGRES_URL)"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\nSKIPPING the tests that need PostgreSQL: nothing answers at {url}. Start a server there, or point \
             EBB_TEST_POSTGRES_URL at one (postgres://user@host:port/db), and run `cargo test` again; \
             EBB_REQUIRE_POSTGRES=1 makes its absence a failure (CI sets it).\n"
        );
        false
    })
}

/// The host and port of a `postgres://` URL.
fn postgres_address(url: &str) -> Option<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str().unwrap_or("127.0.0.1");
    (host, u.port().unwrap_or(5432)).to_socket_addrs().ok()?.next()
}

/// Skips the calling test (returns) when PostgreSQL is absent and not required; see
/// [`support::postgres`](crate::support::postgres).
macro_rules! require_postgres {
    () => {
        if !$crate::support::postgres() {
            return;
        }
    };
}

/// A client of the test PostgreSQL (`EBB_TEST_POSTGRES_URL`), its connection driven on `rt`.
/// Panics when the server is absent: call it after `require_postgres!`.
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

/// An access token of the sandbox at `url` (client credentials of the example project).
pub async fn sandbox_token(http: &reqwest::Client, url: &str) -> String {
    let token: serde_json::Value = http
        .post(format!("{url}/services/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=ebb-sandbox&client_secret=ebb-sandbox")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    token["access_token"].as_str().expect("a token").to_string()
}

/// The errors of a `validate --format json` report: (code, line, column, help).
pub fn json_errors(report: &serde_json::Value) -> Vec<(String, u64, u64, String)> {
    report["diagnostics"]
        .as_array()
        .expect("a diagnostics list")
        .iter()
        .filter(|d| d["severity"] == "error")
        .map(|d| {
            (
                d["code"].as_str().unwrap_or("").to_string(),
                d["line"].as_u64().unwrap_or(0),
                d["column"].as_u64().unwrap_or(0),
                d["help"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// A project of a DuckDB `warehouse` (`warehouse.duckdb`) and the sandbox at `url` as
/// connection `hubspot` (its token read from `EBB_TEST_HUBSPOT_TOKEN`), with `model` as
/// `models/{file}`.
pub fn hubspot_project(url: &str, file: &str, model: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ebb.yaml"),
        format!(
            "version: 1
connections:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
  hubspot:
    type: hubspot
    token: ${{EBB_TEST_HUBSPOT_TOKEN}}
    base_url: {url}
"
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::write(dir.path().join("models").join(file), model).unwrap();
    dir
}
