//! The table writer on PostgreSQL: one session for the writer's life (the mirror's key
//! table is a temporary table of it), rows staged per call into a temporary table with
//! binary `COPY … FROM STDIN` (values encoded here, never pasted into SQL), merged with
//! `INSERT … ON CONFLICT` in the same transaction.

use super::types::{ColumnType, DbType};
use super::{
    check_found, quote_ident, resolve_found, sql, stage, staged_columns, Existing, ExistingColumn, Mode, OnDeleted,
    Resolved, TableCheck, TableError, TableName, TableRow, TableSpec, WriteCounts,
};
use crate::config::env;
use crate::config::project::PostgresConnection;
use crate::diagnostics::{lowercase_first, root_cause};
use arrow::array::{
    Array, AsArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Date32Type, Decimal128Type, Float64Type, Int64Type, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use futures_util::SinkExt;
use std::collections::VecDeque;
use std::time::Duration;
use tokio_postgres::Client;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const STAGE: &str = "ebb_stage";
const DELETES: &str = "ebb_delete";
const SEEN: &str = "ebb_mirror_seen";
/// Days and microseconds between 1970-01-01 (Arrow) and 2000-01-01 (PostgreSQL).
const EPOCH_DAYS: i32 = 10_957;
const EPOCH_MICROS: i64 = 946_684_800_000_000;
/// COPY data is sent in chunks of about this size.
const CHUNK: usize = 1 << 20;

/// A PostgreSQL table being written.
pub struct PostgresWriter {
    spec: TableSpec,
    name: TableName,
    client: Client,
    resolved: Option<Resolved>,
    mirroring: bool,
}

impl PostgresWriter {
    pub async fn open(spec: TableSpec, name: TableName, c: &PostgresConnection) -> Result<PostgresWriter, TableError> {
        let fail = |message: String| TableError::Connect {
            connection: spec.connection.clone(),
            message,
        };
        let url = crate::redact::escape_userinfo(&env::expand_env(&c.url).map_err(|source| TableError::Env {
            connection: spec.connection.clone(),
            source,
        })?);
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| fail(format!("invalid PostgreSQL URL: {e}")))?;
        let connecting = config.connect(crate::source::postgres_tls::MakeRustls::new());
        let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => return Err(fail(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))),
            Ok(Err(e)) => {
                return Err(fail(match e.as_db_error() {
                    Some(db) => db.message().to_string(),
                    None => lowercase_first(&root_cause(&e)),
                }))
            }
            Ok(Ok(pair)) => pair,
        };
        tokio::spawn(async move {
            // Errors here surface on the client's next call.
            let _ = connection.await;
        });
        Ok(PostgresWriter {
            spec,
            name,
            client,
            resolved: None,
            mirroring: false,
        })
    }

    pub async fn check(&mut self) -> Result<TableCheck, TableError> {
        Ok(check_found(&self.spec, self.existing().await?))
    }

    pub async fn ensure(&mut self) -> Result<(), TableError> {
        self.resolve().await.map(|_| ())
    }

    async fn resolve(&mut self) -> Result<Resolved, TableError> {
        if let Some(r) = &self.resolved {
            return Ok(r.clone());
        }
        let table = self.spec.table.clone();
        let found = match self.existing().await? {
            Some(e) => Some(e),
            None => {
                let schema = self.schema().await?;
                let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(&self.name.table));
                let ddl = sql::create_table(&self.spec, &qualified, |t| t.postgres(), "timestamptz", str::to_string);
                let tx = self.client.transaction().await.map_err(|e| db(&table, &e))?;
                tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&schema)))
                    .await
                    .map_err(|e| db(&table, &e))?;
                tx.batch_execute(&ddl).await.map_err(|e| db(&table, &e))?;
                tx.commit().await.map_err(|e| db(&table, &e))?;
                self.existing().await?
            }
        };
        let r = resolve_found(&self.spec, found)?;
        self.resolved = Some(r.clone());
        Ok(r)
    }

    /// `UPDATE … SET` `values` (text, cast to each column's type; `None`: null) on the rows
    /// whose `key_column` reads `key` as text. Returns how many rows changed.
    pub async fn set_where(
        &mut self,
        key_column: String,
        key: String,
        values: Vec<(String, Option<String>)>,
    ) -> Result<u64, TableError> {
        let table = self.spec.table.clone();
        let schema = self.schema().await?;
        let rows = self
            .client
            .query(
                "SELECT column_name::text, format_type(a.atttypid, a.atttypmod)
                 FROM information_schema.columns c
                 JOIN pg_attribute a ON a.attrelid = format('%I.%I', c.table_schema, c.table_name)::regclass
                      AND a.attname = c.column_name
                 WHERE c.table_schema = $1 AND c.table_name = $2",
                &[&schema, &self.name.table],
            )
            .await
            .map_err(|e| db(&table, &e))?;
        let types = rows
            .iter()
            .map(|r| (r.get::<_, String>(0).to_ascii_lowercase(), r.get::<_, String>(1)))
            .collect();
        let (sql, params) = super::set_sql(&schema, &self.name.table, &types, &key_column, key, values, |n| {
            format!("${n}::text")
        })?;
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        self.client.execute(&sql, &params).await.map_err(|e| db(&table, &e))
    }

    async fn schema(&self) -> Result<String, TableError> {
        match &self.name.schema {
            Some(s) => Ok(s.clone()),
            None => {
                let row = self
                    .client
                    .query_one("SELECT current_schema()::text", &[])
                    .await
                    .map_err(|e| db(&self.spec.table, &e))?;
                Ok(row.get(0))
            }
        }
    }

    /// The table as it is, `None` when missing.
    async fn existing(&self) -> Result<Option<Existing>, TableError> {
        let table = &self.spec.table;
        let schema = self.schema().await?;
        let found = self
            .client
            .query(
                "SELECT n.nspname::text, c.relname::text, c.oid FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE lower(n.nspname) = lower($1) AND lower(c.relname) = lower($2) AND c.relkind IN ('r', 'p')",
                &[&schema, &self.name.table],
            )
            .await
            .map_err(|e| db(table, &e))?;
        let found: Vec<(String, String, u32)> = found.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        let pick = found
            .iter()
            .find(|(s, t, _)| *s == schema && *t == self.name.table)
            .or_else(|| (found.len() == 1).then(|| &found[0]));
        let Some((schema, tname, oid)) = pick.cloned() else {
            return Ok(None);
        };
        let columns = self
            .client
            .query(
                "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull, atthasdef FROM pg_attribute \
                 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&oid],
            )
            .await
            .map_err(|e| db(table, &e))?
            .iter()
            .map(|r| {
                let not_null: bool = r.get(2);
                let has_default: bool = r.get(3);
                ExistingColumn {
                    name: r.get(0),
                    ty: DbType::from_postgres(r.get(1)),
                    required: not_null && !has_default,
                }
            })
            .collect();
        let unique = self
            .client
            .query(
                "SELECT array(SELECT a.attname::text FROM unnest(i.indkey) k \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k) \
                 FROM pg_index i WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL",
                &[&oid],
            )
            .await
            .map_err(|e| db(table, &e))?
            .iter()
            .map(|r| r.get::<_, Vec<String>>(0))
            .collect();
        Ok(Some(Existing {
            schema,
            table: tname,
            columns,
            unique,
        }))
    }

    pub async fn write(&mut self, rows: Vec<TableRow>, extracted_at: DateTime<Utc>) -> Result<WriteCounts, TableError> {
        let r = self.resolve().await?;
        let spec = self.spec.clone();
        // Converting and encoding are CPU work: off the runtime's threads.
        let prepared = tokio::task::spawn_blocking(move || -> Result<_, TableError> {
            let staged = stage(&spec, rows)?;
            let types: Vec<ColumnType> = staged_columns(&spec).iter().map(|c| c.ty).collect();
            let data = encode(&staged.batch, &types);
            let key_ty = key_type(&spec);
            let deletes = encode(
                &RecordBatch::try_new(
                    std::sync::Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
                        "k",
                        staged.delete_keys.data_type().clone(),
                        true,
                    )])),
                    vec![staged.delete_keys.clone()],
                )
                .map_err(|e| TableError::Database {
                    table: spec.table.clone(),
                    message: e.to_string(),
                })?,
                &[key_ty],
            );
            Ok((
                staged.batch.num_rows() as u64,
                staged.delete_keys.len() as u64,
                staged.collapsed,
                data,
                deletes,
            ))
        })
        .await
        .map_err(|e| TableError::Database {
            table: self.spec.table.clone(),
            message: format!("the encoding thread failed: {e}"),
        })??;
        let (rows, deletes, collapsed, data, delete_data) = prepared;
        let table = self.spec.table.clone();
        let spec = &self.spec;
        let tx = self.client.transaction().await.map_err(|e| db(&table, &e))?;
        let cols = staged_columns(spec);
        let defs: Vec<String> = r
            .columns
            .iter()
            .zip(&cols)
            .map(|(name, c)| format!("{name} {}", c.ty.postgres()))
            .collect();
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE {STAGE} ({}) ON COMMIT DROP; CREATE TEMP TABLE {DELETES} (k {}) ON COMMIT DROP",
            defs.join(", "),
            key_type(spec).postgres()
        ))
        .await
        .map_err(|e| db(&table, &e))?;
        copy_in(&tx, &table, STAGE, data).await?;
        if deletes > 0 {
            copy_in(&tx, &table, DELETES, delete_data).await?;
        }
        let soft = spec.on_deleted == OnDeleted::Soft;
        let mut counts = WriteCounts {
            skipped: collapsed,
            ..WriteCounts::default()
        };
        let (live_sql, gone_sql) = match spec.mode {
            Mode::Upsert | Mode::Mirror => (
                sql::upsert(&r, STAGE, soft.then_some(false), true),
                soft.then(|| sql::upsert(&r, STAGE, Some(true), true)),
            ),
            Mode::Append => (
                sql::append(&r, STAGE, soft.then_some(false)),
                soft.then(|| sql::append(&r, STAGE, Some(true))),
            ),
        };
        let live = tx
            .execute(&live_sql, &[&extracted_at])
            .await
            .map_err(|e| db(&table, &e))?;
        let gone = match gone_sql {
            Some(q) => tx.execute(&q, &[&extracted_at]).await.map_err(|e| db(&table, &e))?,
            None => 0,
        };
        counts.count_rows(spec.mode, rows, live, gone);
        if deletes > 0 {
            let marked = match soft.then(|| sql::mark_deleted(&r, DELETES)).flatten() {
                Some(q) => tx.execute(&q, &[&extracted_at]).await.map_err(|e| db(&table, &e))?,
                None => {
                    let present: i64 = tx
                        .query_one(&sql::count_present(&r, DELETES), &[])
                        .await
                        .map_err(|e| db(&table, &e))?
                        .get(0);
                    tx.execute(&sql::delete_keys(&r, DELETES), &[])
                        .await
                        .map_err(|e| db(&table, &e))?;
                    present as u64
                }
            };
            counts.deleted += marked;
            counts.skipped += deletes - marked;
        }
        if self.mirroring {
            tx.execute(&sql::remember(&r, STAGE, SEEN), &[])
                .await
                .map_err(|e| db(&table, &e))?;
        }
        tx.commit().await.map_err(|e| db(&table, &e))?;
        Ok(counts)
    }

    pub async fn mirror_begin(&mut self) -> Result<(), TableError> {
        self.resolve().await?;
        let table = self.spec.table.clone();
        self.client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS pg_temp.{SEEN}; CREATE TEMP TABLE {SEEN} (k {})",
                key_type(&self.spec).postgres()
            ))
            .await
            .map_err(|e| db(&table, &e))?;
        self.mirroring = true;
        Ok(())
    }

    pub async fn mirror_end(&mut self, extracted_at: DateTime<Utc>) -> Result<WriteCounts, TableError> {
        let table = self.spec.table.clone();
        if !self.mirroring {
            return Err(TableError::Spec {
                table,
                reason: super::SpecError::MirrorEndWithoutBegin,
            });
        }
        let r = self.resolve().await?;
        let soft = self.spec.on_deleted == OnDeleted::Soft;
        let tx = self.client.transaction().await.map_err(|e| db(&table, &e))?;
        let q = sql::unseen(&r, SEEN, soft);
        let n = if soft {
            tx.execute(&q, &[&extracted_at]).await
        } else {
            tx.execute(&q, &[]).await
        }
        .map_err(|e| db(&table, &e))?;
        tx.batch_execute(&format!("DROP TABLE pg_temp.{SEEN}"))
            .await
            .map_err(|e| db(&table, &e))?;
        tx.commit().await.map_err(|e| db(&table, &e))?;
        self.mirroring = false;
        Ok(WriteCounts {
            deleted: n,
            ..WriteCounts::default()
        })
    }
}

fn key_type(spec: &TableSpec) -> ColumnType {
    spec.columns
        .iter()
        .find(|c| c.name == spec.key)
        .map(|c| c.ty)
        .unwrap_or(ColumnType::Text)
}

/// Sends `data` (binary COPY chunks) into the temporary table `name`.
async fn copy_in(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    name: &str,
    data: Vec<Vec<u8>>,
) -> Result<(), TableError> {
    let sink = tx
        .copy_in::<_, VecDeque<u8>>(&format!("COPY {name} FROM STDIN (FORMAT binary)"))
        .await
        .map_err(|e| db(table, &e))?;
    futures_util::pin_mut!(sink);
    for chunk in data {
        sink.send(VecDeque::from(chunk)).await.map_err(|e| db(table, &e))?;
    }
    sink.as_mut().finish().await.map_err(|e| db(table, &e))?;
    Ok(())
}

/// A staged column, downcast once.
enum Col<'a> {
    Text(&'a StringArray),
    Json(&'a StringArray),
    Bigint(&'a Int64Array),
    Double(&'a Float64Array),
    Decimal(&'a Decimal128Array, u8),
    Boolean(&'a BooleanArray),
    Date(&'a Date32Array),
    Timestamp(&'a TimestampMicrosecondArray),
}

/// The rows of `batch` in PostgreSQL's binary COPY format, in chunks.
fn encode(batch: &RecordBatch, types: &[ColumnType]) -> Vec<Vec<u8>> {
    let cols: Vec<Col<'_>> = batch
        .columns()
        .iter()
        .zip(types)
        .map(|(a, ty)| match ty {
            ColumnType::Text => Col::Text(a.as_string::<i32>()),
            ColumnType::Json => Col::Json(a.as_string::<i32>()),
            ColumnType::Bigint => Col::Bigint(a.as_primitive::<Int64Type>()),
            ColumnType::Double => Col::Double(a.as_primitive::<Float64Type>()),
            ColumnType::Decimal { scale, .. } => Col::Decimal(a.as_primitive::<Decimal128Type>(), *scale),
            ColumnType::Boolean => Col::Boolean(a.as_boolean()),
            ColumnType::Date => Col::Date(a.as_primitive::<Date32Type>()),
            ColumnType::Timestamp => Col::Timestamp(a.as_primitive::<TimestampMicrosecondType>()),
        })
        .collect();
    let mut chunks = Vec::new();
    let mut out = Vec::with_capacity(CHUNK + 4096);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    let count = (cols.len() as i16).to_be_bytes();
    for i in 0..batch.num_rows() {
        out.extend_from_slice(&count);
        for col in &cols {
            field(&mut out, col, i);
        }
        if out.len() >= CHUNK {
            chunks.push(std::mem::replace(&mut out, Vec::with_capacity(CHUNK + 4096)));
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    chunks.push(out);
    chunks
}

/// One field: its length and bytes, or -1 for null.
fn field(out: &mut Vec<u8>, col: &Col<'_>, i: usize) {
    fn put(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let null = match col {
        Col::Text(a) | Col::Json(a) => a.is_null(i),
        Col::Bigint(a) => a.is_null(i),
        Col::Double(a) => a.is_null(i),
        Col::Decimal(a, _) => a.is_null(i),
        Col::Boolean(a) => a.is_null(i),
        Col::Date(a) => a.is_null(i),
        Col::Timestamp(a) => a.is_null(i),
    };
    if null {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return;
    }
    match col {
        Col::Text(a) => put(out, a.value(i).as_bytes()),
        Col::Json(a) => {
            let s = a.value(i);
            out.extend_from_slice(&(s.len() as i32 + 1).to_be_bytes());
            out.push(1);
            out.extend_from_slice(s.as_bytes());
        }
        Col::Bigint(a) => put(out, &a.value(i).to_be_bytes()),
        Col::Double(a) => put(out, &a.value(i).to_be_bytes()),
        Col::Boolean(a) => put(out, &[u8::from(a.value(i))]),
        Col::Date(a) => put(out, &(a.value(i) - EPOCH_DAYS).to_be_bytes()),
        Col::Timestamp(a) => put(out, &(a.value(i) - EPOCH_MICROS).to_be_bytes()),
        Col::Decimal(a, scale) => put(out, &numeric(a.value(i), *scale)),
    }
}

/// `v / 10^scale` in PostgreSQL's binary `numeric`: base-10000 digits around the point.
fn numeric(v: i128, scale: u8) -> Vec<u8> {
    let s = usize::from(scale);
    let digits = v.unsigned_abs().to_string();
    let (int, frac) = if digits.len() > s {
        let (a, b) = digits.split_at(digits.len() - s);
        (a.to_string(), b.to_string())
    } else {
        (String::new(), format!("{}{digits}", "0".repeat(s - digits.len())))
    };
    let int = format!("{}{int}", "0".repeat((4 - int.len() % 4) % 4));
    let frac = format!("{frac}{}", "0".repeat((4 - frac.len() % 4) % 4));
    let group = |s: &str| -> Vec<u16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap_or("0").parse().unwrap_or(0))
            .collect()
    };
    let mut groups = group(&int);
    let mut weight = groups.len() as i16 - 1;
    groups.extend(group(&frac));
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if v < 0 && !groups.is_empty() { 0x4000 } else { 0 };
    let mut out = Vec::with_capacity(8 + groups.len() * 2);
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&u16::from(scale).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    out
}

fn db(table: &str, e: &tokio_postgres::Error) -> TableError {
    let message = match e.as_db_error() {
        Some(d) => {
            let mut m = d.message().to_string();
            if let Some(detail) = d.detail() {
                m.push_str(&format!(" ({detail})"));
            }
            m
        }
        None => lowercase_first(&root_cause(e)),
    };
    TableError::Database {
        table: table.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests;
