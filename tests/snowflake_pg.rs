//! The Snowflake SQL API server's execution of statements it has no canned answer for: on
//! a PostgreSQL database of its own, one session (connection) per request, as Snowflake
//! opens one per SQL API request.
//!
//! What it holds to, as Snowflake does (docs.snowflake.com/developer-guide/sql-api):
//! every statement must parse as Snowflake SQL (sqlparser's Snowflake dialect, which is
//! lenient: it takes `ON CONFLICT` or `COPY … FROM STDIN`, so PostgreSQL's own syntax,
//! which Snowflake refuses, is refused here by name, [`not_snowflake`]); the count
//! of `;`-separated statements must equal `MULTI_STATEMENT_COUNT` (default 1, 0 any);
//! `BEGIN`/`COMMIT`/`ROLLBACK` and temporary tables only inside a multi-statement request;
//! `?` placeholders take the request's `bindings`; a multi-statement request answers with
//! one handle per statement; DML answers `number of rows inserted|updated|deleted` (and
//! `stats`); a failing statement ends the request with 422 and an open transaction is
//! rolled back. Results use Snowflake's wire forms (dates as days, timestamps as epoch
//! seconds, TIMESTAMP_TZ with its offset + 1440).
//!
//! What it translates for PostgreSQL: Snowflake's `PARSE_JSON`, `GET`, `AS_VARCHAR` and
//! `FLATTEN(INPUT => …)` are functions of the database, `TIMESTAMP_TZ`/`_LTZ`/`_NTZ` and
//! `VARIANT` domains, `CREATE TRANSIENT TABLE` becomes `UNLOGGED`, and
//! `information_schema.columns` a view reporting Snowflake's `data_type` names.

use serde_json::{json, Value};
use tokio_postgres::types::Type;

/// Functions, domains and the catalog view Snowflake SQL needs on PostgreSQL.
const SHIMS: &str = r#"
CREATE DOMAIN timestamp_tz AS timestamptz;
CREATE DOMAIN timestamp_ltz AS timestamptz;
CREATE DOMAIN timestamp_ntz AS timestamp;
CREATE DOMAIN variant AS jsonb;
CREATE FUNCTION parse_json(t text) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $f$ SELECT t::jsonb $f$;
CREATE FUNCTION get(v jsonb, k text) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $f$ SELECT v -> k $f$;
CREATE FUNCTION as_varchar(v jsonb) RETURNS text LANGUAGE sql IMMUTABLE
  AS $f$ SELECT CASE WHEN jsonb_typeof(v) = 'string' THEN v #>> '{}' END $f$;
CREATE FUNCTION flatten(input jsonb) RETURNS TABLE(value jsonb) LANGUAGE sql IMMUTABLE
  AS $f$ SELECT jsonb_array_elements(input) $f$;
CREATE SCHEMA ebb_sf;
CREATE VIEW ebb_sf.columns AS
SELECT c.table_catalog, c.table_schema, c.table_name, c.column_name, c.ordinal_position, c.is_nullable,
       c.column_default,
       CASE
         WHEN c.domain_name = 'timestamp_tz' THEN 'TIMESTAMP_TZ'
         WHEN c.domain_name = 'timestamp_ltz' THEN 'TIMESTAMP_LTZ'
         WHEN c.domain_name = 'timestamp_ntz' THEN 'TIMESTAMP_NTZ'
         WHEN c.domain_name = 'variant' THEN 'VARIANT'
         WHEN c.data_type IN ('character varying', 'text', 'character') THEN 'TEXT'
         WHEN c.data_type IN ('numeric', 'bigint', 'integer', 'smallint') THEN 'NUMBER'
         WHEN c.data_type IN ('double precision', 'real') THEN 'FLOAT'
         WHEN c.data_type = 'boolean' THEN 'BOOLEAN'
         WHEN c.data_type = 'date' THEN 'DATE'
         WHEN c.data_type = 'timestamp with time zone' THEN 'TIMESTAMP_LTZ'
         WHEN c.data_type = 'timestamp without time zone' THEN 'TIMESTAMP_NTZ'
         WHEN c.data_type IN ('json', 'jsonb') THEN 'VARIANT'
         ELSE upper(c.data_type)
       END AS data_type,
       CASE WHEN c.data_type = 'numeric' THEN c.numeric_precision
            WHEN c.data_type IN ('bigint', 'integer', 'smallint') THEN 38 END AS numeric_precision,
       CASE WHEN c.data_type = 'numeric' THEN c.numeric_scale
            WHEN c.data_type IN ('bigint', 'integer', 'smallint') THEN 0 END AS numeric_scale
FROM information_schema.columns c;
"#;

/// A PostgreSQL database standing in for one Snowflake account's database.
pub struct Backend {
    /// The database's URL.
    pub url: String,
}

/// One statement's answer: its columns (`rowType`), rows, and DML counts.
pub struct Answer {
    pub row_type: Vec<Value>,
    pub rows: Vec<Vec<Option<String>>>,
    pub stats: Option<Value>,
}

/// A request refused the way Snowflake refuses it (422).
pub struct Refusal {
    pub code: &'static str,
    pub sql_state: String,
    pub message: String,
}

fn refuse(code: &'static str, sql_state: &str, message: String) -> Refusal {
    Refusal {
        code,
        sql_state: sql_state.into(),
        message,
    }
}

impl Backend {
    /// A fresh database (`tag` names it) with the shims.
    pub async fn create(tag: &str) -> Backend {
        let admin = crate::source_postgres::url();
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let name = format!("ebb_sf_{tag}_{}", std::process::id());
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&format!("/{name}"));
        let backend = Backend { url: url.to_string() };
        let (db, conn) = tokio_postgres::connect(&backend.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        db.batch_execute(SHIMS).await.unwrap();
        backend
    }

    /// Runs `statement` as one request: `count` is its `MULTI_STATEMENT_COUNT`, `binds`
    /// its bindings' text values, `schema` the request's schema. One answer a statement.
    pub async fn run(
        &self,
        statement: &str,
        count: usize,
        binds: &[Option<String>],
        schema: Option<&str>,
    ) -> Result<Vec<Answer>, Refusal> {
        let statements = split(statement);
        if count != 0 && statements.len() != count {
            return Err(refuse(
                "000008",
                "0A000",
                format!(
                    "Actual statement count {} did not match the desired statement count {count}.",
                    statements.len()
                ),
            ));
        }
        let dialect = sqlparser::dialect::SnowflakeDialect {};
        let mut bound = 0;
        let mut translated = Vec::new();
        for s in &statements {
            if let Err(e) = sqlparser::parser::Parser::parse_sql(&dialect, s) {
                return Err(refuse(
                    "001003",
                    "42000",
                    format!("SQL compilation error:\nsyntax error: {e}"),
                ));
            }
            if let Some(what) = not_snowflake(s) {
                return Err(refuse(
                    "001003",
                    "42000",
                    format!("SQL compilation error:\nsyntax error: {what} is PostgreSQL's, not Snowflake's"),
                ));
            }
            let upper = s.trim_start().to_ascii_uppercase();
            let session_only = ["BEGIN", "COMMIT", "ROLLBACK"].iter().any(|k| upper.starts_with(k))
                || upper.starts_with("CREATE TEMPORARY")
                || upper.starts_with("CREATE TEMP ");
            if session_only && statements.len() == 1 {
                return Err(refuse(
                    "000002",
                    "0A000",
                    format!("Unsupported feature '{}' in a single-statement request.", s.trim()),
                ));
            }
            let (pg, used) = substitute(&translate(s), &binds[bound.min(binds.len())..]);
            bound += used;
            translated.push(pg);
        }
        let (db, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .map_err(|e| refuse("390100", "08001", e.to_string()))?;
        tokio::spawn(conn);
        if let Some(schema) = schema {
            let path = format!("SET search_path = \"{}\", public", schema.replace('"', "\"\""));
            db.batch_execute(&path)
                .await
                .map_err(|e| refuse("390100", "08001", e.to_string()))?;
        }
        let mut answers = Vec::new();
        let mut open = false;
        for pg in &translated {
            match execute(&db, pg).await {
                Ok(a) => answers.push(a),
                Err(e) => {
                    if open {
                        let _ = db.batch_execute("ROLLBACK").await;
                    }
                    let (state, message) = match e.as_db_error() {
                        Some(d) => (d.code().code().to_string(), d.message().to_string()),
                        None => ("XX000".into(), e.to_string()),
                    };
                    return Err(refuse("100000", &state, format!("SQL execution error: {message}")));
                }
            }
            let upper = pg.trim_start().to_ascii_uppercase();
            if upper.starts_with("BEGIN") {
                open = true;
            } else if upper.starts_with("COMMIT") || upper.starts_with("ROLLBACK") {
                open = false;
            }
        }
        if open {
            let _ = db.batch_execute("ROLLBACK").await;
        }
        Ok(answers)
    }
}

/// The statements of a request, split at `;` outside strings, quoted names and `$$`.
pub fn split(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' => {
                cur.push(c);
                i += 1;
                while i < chars.len() {
                    cur.push(chars[i]);
                    if chars[i] == '\\' && c == '\'' && i + 1 < chars.len() {
                        cur.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    if chars[i] == c {
                        if chars.get(i + 1) == Some(&c) {
                            cur.push(c);
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            '$' if chars.get(i + 1) == Some(&'$') => {
                cur.push_str("$$");
                i += 2;
                while i < chars.len() && !(chars[i] == '$' && chars.get(i + 1) == Some(&'$')) {
                    cur.push(chars[i]);
                    i += 1;
                }
                cur.push_str("$$");
                i += 1;
            }
            ';' => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
        i += 1;
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// PostgreSQL's syntax that Snowflake does not have and the lenient parser lets through,
/// outside literals and quoted names: what it is, when `statement` uses it.
pub fn not_snowflake(statement: &str) -> Option<&'static str> {
    let mut code = String::new();
    let mut quote: Option<char> = None;
    let mut chars = statement.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some('$') => {
                if c == '$' && chars.peek() == Some(&'$') {
                    chars.next();
                    quote = None;
                }
            }
            Some(q) => {
                if c == q {
                    quote = None;
                }
            }
            None if c == '$' && chars.peek() == Some(&'$') => {
                chars.next();
                quote = Some('$');
                code.push_str(" '' ");
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                code.push_str(" x ");
            }
            None => code.push(c.to_ascii_uppercase()),
        }
    }
    let words: Vec<&str> = code
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == ':'))
        .filter(|w| !w.is_empty())
        .collect();
    let has = |seq: &[&str]| words.windows(seq.len()).any(|w| w == seq);
    let denied: [(&[&str], &'static str); 9] = [
        (&["ON", "CONFLICT"], "`ON CONFLICT`"),
        (&["RETURNING"], "`RETURNING`"),
        (&["FROM", "STDIN"], "`COPY … FROM STDIN`"),
        (&["ON", "COMMIT", "DROP"], "`ON COMMIT DROP`"),
        (&["UNLOGGED"], "`UNLOGGED`"),
        (&["JSONB"], "the `jsonb` type"),
        (&["BYTEA"], "the `bytea` type"),
        (&["SERIAL"], "the `serial` type"),
        (&["ILIKE", "ANY"], "`ILIKE ANY`"),
    ];
    if let Some((_, what)) = denied.iter().find(|(seq, _)| has(seq)) {
        return Some(what);
    }
    if words
        .iter()
        .any(|w| w.len() > 1 && w.starts_with('$') && w[1..].bytes().all(|b| b.is_ascii_digit()))
    {
        return Some("a `$n` placeholder");
    }
    if code.contains("::JSONB") || code.contains("PG_CATALOG") || code.contains("PG_TEMP") {
        return Some("PostgreSQL's catalog or casts");
    }
    None
}

/// Snowflake-only syntax in PostgreSQL's words.
fn translate(s: &str) -> String {
    let mut t = s.to_string();
    for (from, to) in [
        ("CREATE TRANSIENT TABLE", "CREATE UNLOGGED TABLE"),
        ("information_schema.columns", "ebb_sf.columns"),
    ] {
        while let Some(at) = t.to_ascii_lowercase().find(&from.to_ascii_lowercase()) {
            t.replace_range(at..at + from.len(), to);
        }
    }
    t
}

/// `?` placeholders (outside strings) replaced by the bound values as literals; how many
/// were used.
fn substitute(s: &str, binds: &[Option<String>]) -> (String, usize) {
    let mut out = String::new();
    let mut used = 0;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (Some(q), _) if c == q => {
                quote = None;
                out.push(c);
            }
            (None, '?') => {
                match binds.get(used).cloned().flatten() {
                    Some(v) => out.push_str(&format!("'{}'", v.replace('\'', "''"))),
                    None => out.push_str("NULL"),
                }
                used += 1;
            }
            _ => out.push(c),
        }
    }
    (out, used)
}

/// Runs one translated statement, answering as Snowflake does.
async fn execute(db: &tokio_postgres::Client, pg: &str) -> Result<Answer, tokio_postgres::Error> {
    let upper = pg.trim_start().to_ascii_uppercase();
    if upper.starts_with("SELECT") || upper.starts_with("WITH") {
        return select(db, pg).await;
    }
    let n = db
        .simple_query(pg)
        .await?
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(n),
            _ => None,
        })
        .unwrap_or_default();
    let counted = |name: &str, stat: &str| Answer {
        row_type: vec![json!({"name": name, "type": "fixed", "precision": 19, "scale": 0, "nullable": false})],
        rows: vec![vec![Some(n.to_string())]],
        stats: Some(json!({ stat: n })),
    };
    Ok(if upper.starts_with("INSERT") {
        counted("number of rows inserted", "numRowsInserted")
    } else if upper.starts_with("UPDATE") {
        let mut a = counted("number of rows updated", "numRowsUpdated");
        a.row_type
            .push(json!({"name": "number of multi-joined rows updated", "type": "fixed", "precision": 19, "scale": 0}));
        a.rows[0].push(Some("0".into()));
        a
    } else if upper.starts_with("DELETE") {
        counted("number of rows deleted", "numRowsDeleted")
    } else {
        Answer {
            row_type: vec![json!({"name": "status", "type": "text", "nullable": true})],
            rows: vec![vec![Some("Statement executed successfully.".into())]],
            stats: None,
        }
    })
}

/// A query's rows in Snowflake's wire forms, converted by the database itself.
async fn select(db: &tokio_postgres::Client, pg: &str) -> Result<Answer, tokio_postgres::Error> {
    let prepared = db.prepare(pg).await?;
    let mut row_type = Vec::new();
    let mut exprs = Vec::new();
    for (i, c) in prepared.columns().iter().enumerate() {
        let v = format!("q.c{i}");
        let (ty, expr, extra) = match *c.type_() {
            Type::INT2 | Type::INT4 | Type::INT8 => {
                ("fixed", format!("{v}::text"), json!({"precision": 18, "scale": 0}))
            }
            Type::FLOAT4 | Type::FLOAT8 => ("real", format!("{v}::text"), json!({})),
            Type::BOOL => ("boolean", format!("{v}::text"), json!({})),
            Type::DATE => ("date", format!("({v} - DATE '1970-01-01')::text"), json!({})),
            Type::TIMESTAMPTZ => (
                "timestamp_tz",
                format!("extract(epoch FROM {v})::numeric(30,9)::text || ' 1440'"),
                json!({"scale": 9}),
            ),
            Type::TIMESTAMP => (
                "timestamp_ntz",
                format!("extract(epoch FROM {v})::numeric(30,9)::text"),
                json!({"scale": 9}),
            ),
            Type::JSON | Type::JSONB => ("variant", format!("{v}::text"), json!({})),
            // numeric without its declared scale: as text, which reads back the same.
            _ => ("text", format!("{v}::text"), json!({})),
        };
        let mut t = json!({"name": c.name().to_ascii_uppercase(), "type": ty, "nullable": true});
        if let (Some(t), Some(e)) = (t.as_object_mut(), extra.as_object()) {
            t.extend(e.clone());
        }
        row_type.push(t);
        exprs.push(expr);
    }
    let names: Vec<String> = (0..exprs.len()).map(|i| format!("c{i}")).collect();
    let rows = if exprs.is_empty() {
        Vec::new()
    } else {
        let wrapped = format!("SELECT {} FROM ({pg}) AS q({})", exprs.join(", "), names.join(", "));
        db.simple_query(&wrapped)
            .await?
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect()
    };
    Ok(Answer {
        row_type,
        rows,
        stats: None,
    })
}

#[test]
fn postgresql_syntax_is_refused_outside_literals() {
    assert_eq!(
        not_snowflake("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO NOTHING"),
        Some("`ON CONFLICT`")
    );
    assert_eq!(
        not_snowflake("SELECT a FROM t WHERE a = $1"),
        Some("a `$n` placeholder")
    );
    assert_eq!(not_snowflake("COPY t FROM STDIN"), Some("`COPY … FROM STDIN`"));
    assert_eq!(
        not_snowflake("CREATE TEMP TABLE t (a jsonb) ON COMMIT DROP"),
        Some("`ON COMMIT DROP`")
    );
    // Inside literals and quoted names, and Snowflake's own syntax: fine.
    assert_eq!(
        not_snowflake("SELECT PARSE_JSON($$[\"on conflict\", \"$1\"]$$) AS j"),
        None
    );
    assert_eq!(not_snowflake("SELECT 'RETURNING' AS \"jsonb\""), None);
    assert_eq!(
        not_snowflake("SELECT f.value FROM (SELECT PARSE_JSON('[1]') AS j) AS p, LATERAL FLATTEN(INPUT => p.j) AS f"),
        None
    );
    assert_eq!(not_snowflake("CREATE TRANSIENT TABLE x (k NUMERIC(38,0))"), None);
}

#[test]
fn statements_split_outside_literals() {
    assert_eq!(
        split("SELECT ';'; SELECT \"a;b\"; SELECT $$x;y$$; BEGIN;"),
        vec!["SELECT ';'", "SELECT \"a;b\"", "SELECT $$x;y$$", "BEGIN"]
    );
    assert_eq!(
        substitute("a = ? AND b = '?' AND c = ?", &[Some("x'y".into()), None]).0,
        "a = 'x''y' AND b = '?' AND c = NULL"
    );
}
