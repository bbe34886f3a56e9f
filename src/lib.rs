//! ebb: a declarative reverse-ETL engine.
//!
//! Analysts describe in YAML which warehouse rows land in which CRM object and how fields
//! map; `ebb` validates the project, compiles each model into a [`plan::SyncPlan`] and runs
//! it. Every module, in layers (a module imports only from its own layer or those above
//! it; nothing imports `validate` but the commands and the daemon's reload):
//!
//! Foundations:
//! - [`diagnostics`]: problems as data, with a stable code and a file:line:col span;
//! - [`redact`]: credentials masked out of every URL and message ebb prints or stores;
//! - [`yaml`]: YAML with a position on every node, bounded in depth and alias copies;
//! - [`path`]: field paths, where a mapping reads its value in a row;
//! - [`http`]: the one HTTP client, its limits (no redirects, bounded answers, one origin,
//!   https but to loopback), and each connection's concurrency and rate limits
//!   ([`http::limit`]);
//!
//! The file format and what it compiles to:
//! - [`config`]: `ebb.yaml` and `models/*.yaml` as serde types, and finding and reading them;
//! - [`schema`]: the JSON schemas generated from those types;
//! - [`schedule`], [`transform`], [`time`]: an interval or cron, the transforms' grammar,
//!   times as CRMs write them;
//! - [`webhook`]: inbound webhooks without IO: signatures checked on the raw body, a body
//!   read into events;
//! - [`plan`]: the compiled, resolved form of a model, and the compiler (no IO);
//! - [`validate`]: every check of a project, the compiler's and those needing IO, collected
//!   as diagnostics;
//!
//! Running a plan:
//! - [`hubspot`]: the HubSpot connection layer both directions share: token, limits,
//!   requests and how their failures are sorted;
//! - [`salesforce`]: the Salesforce connection layer both directions share: OAuth tokens,
//!   one connection's limits, call counting and requests;
//! - [`source`]: warehouses streaming a query's rows as Arrow batches, and Salesforce
//!   objects read the same way (REST or Bulk API 2.0 query);
//! - [`map`]: source rows to destination records (paths, transforms, exact JSON, hashes),
//!   and why a row cannot be sent (typed causes behind each row error's stable code);
//! - [`destination`]: where records are delivered (Salesforce, an HTTP endpoint, files), with
//!   per-connection limits and retries;
//! - [`audit`]: the audit log's entries, actors, key hashes and hash chain (no IO; the
//!   state store keeps them);
//! - [`state`]: snapshots, run history, row errors, the audit log and retention (SQLite or
//!   PostgreSQL);
//! - [`engine`]: one run of one model: diff against the snapshot, deliver, record; why a
//!   run failed is an [`engine::RunError`];
//! - [`alerts`]: conditions over each model's health, notified to Slack, PagerDuty and
//!   webhooks when they start and stop holding;
//!
//! Programs:
//! - [`daemon`]: `ebb daemon`: schedules, hot reload, the HTTP API, graceful shutdown;
//! - [`sandbox`]: `ebb sandbox`, a local Salesforce-compatible API to sync into;
//! - `demo` (with the `duckdb` feature): the demo warehouse, seeded customer data;
//! - [`cli`]: the `ebb` command.

pub mod alerts;
pub mod audit;
pub mod cli;
pub mod config;
pub mod crypt;
pub mod daemon;
#[cfg(feature = "duckdb")]
pub mod demo;
pub mod destination;
pub mod diagnostics;
pub mod engine;
pub mod http;
pub mod hubspot;
pub mod logging;
pub mod map;
pub mod path;
pub mod plan;
pub mod redact;
pub mod salesforce;
pub mod sandbox;
pub mod schedule;
pub mod schema;
pub mod snowflake;
pub mod source;
pub mod state;
pub mod time;
pub mod transform;
pub mod validate;
pub mod webhook;
pub mod yaml;
