//! Benchmark: streaming a model's rows out of the warehouse.
//!
//! Reads 1M and 10M rows × 8 columns (a BIGINT key, four strings, a double, a timestamp
//! and a boolean) from DuckDB and from PostgreSQL through `ebb::source`, and prints rows/s
//! and the peak resident memory of each run. Each scenario runs in a child process of its
//! own so that peak RSS belongs to that scenario alone: if memory is bounded, the 10M-row
//! run peaks where the 1M-row run does.
//!
//! DuckDB runs twice: with its default memory limit (80% of RAM, so its buffer cache grows
//! with the table it scans) and with `memory_limit: 128MB`.
//!
//! Run: `cargo bench --bench sources` (release build). PostgreSQL comes from
//! `EBB_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! `EBB_BENCH_ROWS=100000,1000000` changes the sizes, `EBB_BENCH_SOURCES=duckdb,postgres`
//! the sources.

use ebb::config::project::{ConnectionSpec, DuckdbConnection, PostgresConnection};
use ebb::source::Source;
use std::process::Command;
use std::time::Instant;

const COLUMNS: &str = "id, first_name, last_name, email, segment, score, updated_at, active";

fn pg_url() -> String {
    std::env::var("EBB_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

mod common;
use common::peak_rss;

/// Child process: stream every row of the table and print `rows seconds peak_rss`.
fn measure(kind: &str, target: &str, rows: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (spec, dir, table) = match kind {
            "duckdb" | "duckdb-128MB" => (
                ConnectionSpec::Duckdb(DuckdbConnection {
                    path: target.into(),
                    read_only: None,
                    memory_limit: (kind == "duckdb-128MB").then(|| "128MB".to_string()),
                    external_access: None,
                }),
                std::path::PathBuf::from("/"),
                format!("bench_{rows}"),
            ),
            _ => (
                ConnectionSpec::Postgres(PostgresConnection {
                    url: pg_url(),
                    fetch_size: Some(10_000),
                }),
                std::path::PathBuf::from("."),
                format!("ebb_bench.rows_{rows}"),
            ),
        };
        let source = Source::open("test", &spec, &dir).unwrap();
        let t = Instant::now();
        let mut stream = source
            .query(&format!("SELECT {COLUMNS} FROM {table}"), 10_000)
            .await
            .unwrap();
        let mut n = 0u64;
        while let Some(b) = stream.next().await {
            n += b.unwrap().num_rows() as u64;
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(n, rows, "read {n} of {rows} rows");
        println!("{n} {secs} {}", peak_rss());
    });
}

fn duckdb_table(path: &std::path::Path, rows: u64) {
    let conn = duckdb::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS bench_{rows} AS SELECT
            range AS id, 'first_' || (range % 1000) AS first_name, 'last_' || (range % 5000) AS last_name,
            'user' || range || '@example.com' AS email, ['SMB','Mid-Market','Enterprise'][1 + range % 3] AS segment,
            (range % 1000) / 1000.0 AS score, TIMESTAMP '2026-01-01' + INTERVAL (range % 86400) SECOND AS updated_at,
            range % 2 = 0 AS active
         FROM range({rows})"
    ))
    .unwrap();
}

fn pg_table(rows: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await.expect("PostgreSQL");
        tokio::spawn(conn);
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'ebb_bench' AND tablename = $1)",
                &[&format!("rows_{rows}")],
            )
            .await
            .unwrap()
            .get(0);
        if !exists {
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS ebb_bench;
                     CREATE UNLOGGED TABLE ebb_bench.rows_{rows} AS SELECT
                        g::bigint AS id, 'first_' || (g % 1000) AS first_name, 'last_' || (g % 5000) AS last_name,
                        'user' || g || '@example.com' AS email, (ARRAY['SMB','Mid-Market','Enterprise'])[1 + g % 3] AS segment,
                        (g % 1000) / 1000.0::float8 AS score, TIMESTAMP '2026-01-01' + (g % 86400) * INTERVAL '1 second' AS updated_at,
                        g % 2 = 0 AS active
                     FROM generate_series(0, {rows} - 1) g"
                ))
                .await
                .unwrap();
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--measure") {
        measure(&args[i + 1], &args[i + 2], args[i + 3].parse().unwrap());
        return;
    }
    let sizes: Vec<u64> = std::env::var("EBB_BENCH_ROWS")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let dir = std::env::temp_dir().join("ebb-bench-sources");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("bench.duckdb");
    let exe = std::env::current_exe().unwrap();
    println!("source        rows         seconds   rows/s        peak RSS");
    let kinds = std::env::var("EBB_BENCH_SOURCES").unwrap_or_else(|_| "duckdb,duckdb-128MB,postgres".into());
    for kind in kinds.split(',') {
        for &rows in &sizes {
            match kind {
                "postgres" => pg_table(rows),
                _ => duckdb_table(&db, rows),
            }
            let out = Command::new(&exe)
                .args(["--measure", kind, db.to_str().unwrap(), &rows.to_string()])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout);
            let parts: Vec<&str> = text.split_whitespace().collect();
            let (n, secs, rss): (u64, f64, u64) = (
                parts[0].parse().unwrap(),
                parts[1].parse().unwrap(),
                parts[2].parse().unwrap(),
            );
            println!(
                "{kind:<13} {n:<12} {secs:<9.2} {:<13.0} {:.0} MiB",
                n as f64 / secs,
                rss as f64 / (1024.0 * 1024.0)
            );
        }
    }
}
