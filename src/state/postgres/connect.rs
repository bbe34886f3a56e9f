//! Opening the PostgreSQL store: the URL's settings and the defaults ebb adds (timeouts,
//! keepalives, the application name), one connection made within its timeout
//! ([`connect()`]), and the schema created or migrated to the current version.

use super::*;
use crate::state::{schema_v1, StateError, SCHEMA_VERSION};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

impl PgStore {
    pub async fn open(url: &str) -> Result<PgStore, StateError> {
        let shown = crate::redact::url(url);
        // `ebb_schema` is ours; the rest of the URL is PostgreSQL's.
        let mut parsed = url::Url::parse(url).map_err(|e| StateError::Open(format!("`{shown}`: {e}")))?;
        let mut schema = "ebb".to_string();
        let mut timeout = None;
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(k, v)| {
                if k == "ebb_schema" {
                    schema = v.to_string();
                    false
                } else if k == "ebb_statement_timeout" {
                    timeout = Some(v.to_string());
                    false
                } else {
                    true
                }
            })
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        parsed.set_query(None);
        if !pairs.is_empty() {
            parsed.query_pairs_mut().extend_pairs(pairs);
        }
        if !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || schema.is_empty() {
            return Err(StateError::Open(format!(
                "`ebb_schema={schema}` is not a plain schema name"
            )));
        }
        let statement_timeout = match timeout {
            None => Some(STATEMENT_TIMEOUT),
            Some(t) => match t.trim().parse::<u64>() {
                Ok(0) => None,
                Ok(n) => Some(Duration::from_secs(n)),
                Err(_) => {
                    return Err(StateError::Open(format!(
                        "`ebb_statement_timeout={t}` is not a whole number of seconds"
                    )))
                }
            },
        };
        // Unquoted, PostgreSQL folds the name to lower case; the catalog holds it so.
        let schema = schema.to_ascii_lowercase();
        let name = format!("`{}` (schema `{schema}`)", crate::redact::url(parsed.as_str()));
        let (text, tls) = crate::source::postgres_tls::from_url(parsed.as_str().trim_end_matches('?'))
            .map_err(|e| StateError::Open(format!("{name}: {e}")))?;
        let mut config: tokio_postgres::Config = text.parse().map_err(|e: tokio_postgres::Error| {
            StateError::Open(format!("{name}: {}", crate::redact::text(&e.to_string())))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        // A server gone silent (no reset: a network partition) while ebb waits for an
        // answer: keepalive probes after 30 s of silence, 3 of them 10 s apart.
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(KEEPALIVES_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(Duration::from_secs(10));
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(3);
        }
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        let connect_failed = |source| StateError::Connect {
            store: name.clone(),
            source,
        };
        let client = connect(&config, &tls, true).await.map_err(connect_failed)?;
        let reader = connect(&config, &tls, false).await.map_err(connect_failed)?;
        let store = PgStore {
            config,
            tls,
            client: tokio::sync::Mutex::new(client),
            reader: std::sync::Mutex::new(Arc::new(reader)),
            statements: std::sync::Mutex::new(HashMap::new()),
            statement_timeout,
            schema,
            name,
            created: std::sync::Mutex::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StateError> {
        let s = &self.schema;
        let tables: Vec<String> = self
            .query(
                "SELECT tablename::text FROM pg_catalog.pg_tables WHERE schemaname = $1 ORDER BY 1",
                &[s],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let foreign = |why: String| StateError::Foreign(self.name.clone(), why);
        if tables.is_empty() {
            self.create().await?;
        } else if !tables.iter().any(|t| t == "ebb_meta") {
            let ours: Vec<&str> = tables
                .iter()
                .map(String::as_str)
                .filter(|t| EBB_TABLES.contains(t))
                .collect();
            return Err(foreign(if ours.is_empty() {
                format!(
                    "schema `{s}` holds {} other tables ({}) and no `ebb_meta`",
                    tables.len(),
                    shown_list(&tables)
                )
            } else {
                format!(
                    "schema `{s}` holds ebb's tables ({}) but no `ebb_meta`, as a damaged store would; ebb does \
                     not start it over, since every model's next run would then send every row again: restore \
                     the store from a backup, or drop the schema to start over with a new one",
                    ours.join(", ")
                )
            }));
        }
        let version: Option<String> = self
            .query("SELECT value FROM {s}.ebb_meta WHERE key = 'schema_version'", &[])
            .await?
            .first()
            .map(|r| r.get(0));
        let version: i64 = version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| foreign("its `ebb_meta` has no schema version".into()))?;
        if version > SCHEMA_VERSION {
            return Err(StateError::Newer {
                store: self.name.clone(),
                found: version,
            });
        }
        // Migrations from older versions go here, one step at a time.
        if !tables.is_empty() {
            let missing: Vec<&str> = EBB_TABLES
                .into_iter()
                .filter(|t| !tables.iter().any(|x| x == t))
                .collect();
            if !missing.is_empty() {
                return Err(foreign(format!("its tables {} are missing", missing.join(", "))));
            }
        }
        Ok(())
    }

    /// Creates the tables in an empty (or missing) schema. Daemons opening the store at
    /// once take turns (an advisory lock on the schema's name); the one that comes second
    /// finds the tables there.
    async fn create(&self) -> Result<(), StateError> {
        let s = &self.schema;
        let ddl = schema_v1("BYTEA", "BIGSERIAL PRIMARY KEY", "");
        let script = format!(
            "CREATE SCHEMA IF NOT EXISTS {s}; SET LOCAL search_path = {s}; {ddl}
             INSERT INTO ebb_meta VALUES ('schema_version', '{SCHEMA_VERSION}'), ('created_by', 'ebb {}');",
            env!("CARGO_PKG_VERSION")
        );
        let lock_key = format!("ebb state store {s}");
        let meta = format!("{s}.ebb_meta");
        on_writer!(self, |c| async {
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_key])
                .await?;
            let exists: bool = tx
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&meta])
                .await?
                .get(0);
            if !exists {
                tx.batch_execute(&script).await?;
            }
            tx.commit().await
        }
        .await)
    }

    pub async fn schema_version(&self) -> Result<i64, StateError> {
        let rows = self
            .query("SELECT value FROM {s}.ebb_meta WHERE key = 'schema_version'", &[])
            .await?;
        rows.first()
            .and_then(|r| r.get::<_, String>(0).parse().ok())
            .ok_or_else(|| StateError::Foreign(self.name.clone(), "its schema version is not a number".into()))
    }
}

/// The tables of schema version 1.
const EBB_TABLES: [&str; 7] = [
    "ebb_meta",
    "ebb_models",
    "ebb_runs",
    "ebb_snapshot",
    "ebb_inflight",
    "ebb_row_errors",
    "ebb_locks",
];

/// Up to five names, then how many more.
fn shown_list(names: &[String]) -> String {
    let mut out = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        out.push_str(&format!(" and {} more", names.len() - 5));
    }
    out
}

/// Why a connection to the PostgreSQL server could not be made. The texts hold no secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The server or the network said no (refused, TLS, authentication): the root cause,
    /// secrets masked.
    #[error("{0}")]
    Failed(String),
    /// The connection was not ready within `connect_timeout`.
    #[error("the server did not complete the connection within {} s (`connect_timeout`)", .0.as_secs_f64())]
    TimedOut(Duration),
}

impl ConnectError {
    fn failed(e: &tokio_postgres::Error) -> ConnectError {
        ConnectError::Failed(crate::redact::text(&crate::diagnostics::root_cause(e)))
    }
}

/// One connection to the store, ready within the connect timeout: tokio-postgres bounds
/// only the TCP connect by it, so a server that accepts and then says nothing (not even to
/// TLS or the startup message) would be waited for for ever. The writer's commits need not
/// wait for the server's disk: a commit is durable against a crash of ebb (the server has
/// it) as SQLite's WAL is, and a 5,000-batch run does not pay 10,000 fsyncs; the run lock
/// keeps synchronous commits (see `lock`).
pub(super) async fn connect(
    config: &tokio_postgres::Config,
    tls: &crate::source::postgres_tls::MakeRustls,
    writer: bool,
) -> Result<Client, ConnectError> {
    let limit = config.get_connect_timeout().copied().unwrap_or(CONNECT_TIMEOUT);
    let ready = async {
        let (client, conn) = config
            .connect(tls.clone())
            .await
            .map_err(|e| ConnectError::failed(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        if writer {
            client
                .batch_execute("SET synchronous_commit = off")
                .await
                .map_err(|e| ConnectError::failed(&e))?;
        }
        Ok(client)
    };
    tokio::time::timeout(limit, ready)
        .await
        .unwrap_or(Err(ConnectError::TimedOut(limit)))
}
