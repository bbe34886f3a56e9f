//! The demo warehouse: a DuckDB database with realistic, seeded customer data in the
//! shape the seed design describes (`presentation.customer_360`,
//! `presentation.customer_analytics`, and `raw.crm_customers` for inbound syncs).
//!
//! Values come from hashes of the row number and the seed, so the same seed always
//! builds the same warehouse, whatever the number of threads DuckDB uses.

use duckdb::Connection;
use std::path::{Path, PathBuf};

/// Why the demo warehouse could not be built. Each says which file; the cause's own text
/// is part of the message (not a `source`, so `{:#}` does not print it twice).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The directory for the warehouse file cannot be created.
    #[error("cannot create `{}`: {cause}", .path.display())]
    CreateDir { path: PathBuf, cause: std::io::Error },
    /// A previous warehouse (or its WAL) cannot be removed.
    #[error("cannot replace `{}`: {cause}", .path.display())]
    Replace { path: PathBuf, cause: std::io::Error },
    /// DuckDB cannot create the database file.
    #[error("cannot create `{}`: {cause}", .path.display())]
    Open { path: PathBuf, cause: duckdb::Error },
    /// The SQL that creates and fills the tables failed.
    #[error("cannot build the demo warehouse: {0}")]
    Build(duckdb::Error),
    /// Counting the rows flagged for the CRM failed.
    #[error("{0}")]
    Count(duckdb::Error),
}

/// What was built.
#[derive(Debug, Clone, Copy)]
pub struct Built {
    pub customers: usize,
    pub synced_to_crm: usize,
}

const FIRST: &[&str] = &[
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Radia",
    "Dennis",
    "Sophie",
    "Tim",
    "Hedy",
    "John",
    "Katherine",
    "Guido",
    "Anita",
    "Bjarne",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "Ritchie",
    "Wilson",
    "Berners-Lee",
    "Lamarr",
    "McCarthy",
    "Johnson",
    "van Rossum",
    "Borg",
    "Stroustrup",
];

fn sql_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("'{}'", s.replace('\'', "''"))).collect();
    format!("[{}]", quoted.join(", "))
}

/// SQL for the 3-character suffix that makes a 15-character Salesforce id (the text of
/// `column`) an 18-character one: per 5-character chunk, a letter of
/// `ABCDEFGHIJKLMNOPQRSTUVWXYZ012345` whose bits say which characters are upper case.
fn id_suffix_sql(column: &str) -> String {
    let chunks: Vec<String> = (0..3)
        .map(|k| {
            let bits: Vec<String> = (0..5)
                .map(|i| {
                    format!(
                        "CASE WHEN substr({column}, {}, 1) BETWEEN 'A' AND 'Z' THEN {} ELSE 0 END",
                        5 * k + i + 1,
                        1 << i
                    )
                })
                .collect();
            format!(
                "substr('ABCDEFGHIJKLMNOPQRSTUVWXYZ012345', 1 + {}, 1)",
                bits.join(" + ")
            )
        })
        .collect();
    format!("({})", chunks.join(" || "))
}

/// Creates (or replaces) the demo warehouse at `path` with `customers` rows.
pub fn build_warehouse(path: &Path, customers: usize, seed: u64) -> Result<Built, DemoError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|cause| DemoError::CreateDir {
            path: dir.to_path_buf(),
            cause,
        })?;
    }
    for p in [path.to_path_buf(), path.with_extension("duckdb.wal")] {
        if p.exists() {
            std::fs::remove_file(&p).map_err(|cause| DemoError::Replace { path: p.clone(), cause })?;
        }
    }
    let conn = Connection::open(path).map_err(|cause| DemoError::Open {
        path: path.to_path_buf(),
        cause,
    })?;
    // u(salt): a uniform number in [0, 1) derived from the row and the seed.
    let u = |row: &str, salt: &str| format!("((hash({row}, {seed}, '{salt}') % 1000000) / 1000000.0)");
    let sql = format!(
        "
        CREATE SCHEMA presentation;
        CREATE SCHEMA raw;
        CREATE TABLE presentation.customer_360 AS
        SELECT
            i AS customer_id,
            id15 || {suffix} AS crm_id,
            {first}[1 + (hash(i, {seed}, 'f') % {nf})::INTEGER] AS first_name,
            {last}[1 + (hash(i, {seed}, 'l') % {nl})::INTEGER] AS last_name,
            lower({first}[1 + (hash(i, {seed}, 'f') % {nf})::INTEGER]) || '.' || i || '@example.com' AS email,
            '+1 (555) ' || lpad(((hash(i, {seed}, 'p') % 1000))::VARCHAR, 3, '0') || '-' ||
                lpad(((hash(i, {seed}, 'q') % 10000))::VARCHAR, 4, '0') AS phone,
            '001' || upper(substr(md5((i % 97)::VARCHAR || '{seed}'), 1, 15)) AS account_id,
            CASE WHEN {u_seg} < 0.05 THEN 'Enterprise' WHEN {u_seg} < 0.25 THEN 'Mid-Market'
                 WHEN {u_seg} < 0.70 THEN 'SMB' ELSE 'Consumer' END AS customer_segment,
            round(exp(4 + 6 * {u_ltv}) + 0.0, 2)::DECIMAL(12,2) AS lifetime_value,
            round({u_churn} * {u_churn}, 4) AS churn_risk_score,
            DATE '2026-11-27' - (hash(i, {seed}, 'a') % 365)::INTEGER AS last_activity_date,
            TIMESTAMP '2026-11-27 06:00:00' - INTERVAL (hash(i, {seed}, 's') % 72) HOUR AS segment_updated_date,
            {u_sync} < 0.9 AS sync_to_crm
        FROM (SELECT i, '003' || upper(substr(md5(i::VARCHAR || '{seed}'), 1, 12)) AS id15
              FROM range(1, {customers} + 1) r(i)) t;
        CREATE TABLE presentation.customer_analytics AS
        SELECT
            crm_id, customer_id, email, customer_segment, lifetime_value,
            json_object(
                'upsell', round({u_up}, 3),
                'cross_sell', round({u_cross}, 3),
                'churn', churn_risk_score,
                'history', json_array(round({u_h1}, 2), round({u_h2}, 2))
            ) AS propensity_scores,
            sync_to_crm
        FROM presentation.customer_360;
        CREATE TABLE raw.crm_customers (
            crm_id VARCHAR PRIMARY KEY, first_name VARCHAR, last_name VARCHAR, email VARCHAR,
            phone_primary VARCHAR, account_id VARCHAR, custom_field JSON, modified_date TIMESTAMPTZ,
            is_deleted BOOLEAN, _ebb_extracted_at TIMESTAMPTZ);
        ",
        suffix = id_suffix_sql("id15"),
        first = sql_list(FIRST),
        last = sql_list(LAST),
        nf = FIRST.len(),
        nl = LAST.len(),
        u_seg = u("i", "seg"),
        u_ltv = u("i", "ltv"),
        u_churn = u("i", "churn"),
        u_sync = u("i", "sync"),
        u_up = u("customer_id", "up"),
        u_cross = u("customer_id", "cross"),
        u_h1 = u("customer_id", "h1"),
        u_h2 = u("customer_id", "h2"),
    );
    conn.execute_batch(&sql).map_err(DemoError::Build)?;
    let synced: i64 = conn
        .query_row(
            "SELECT count(*) FROM presentation.customer_analytics WHERE sync_to_crm",
            [],
            |r| r.get(0),
        )
        .map_err(DemoError::Count)?;
    Ok(Built {
        customers,
        synced_to_crm: usize::try_from(synced).unwrap_or(0),
    })
}
