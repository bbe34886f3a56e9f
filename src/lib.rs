//! ebb: a declarative reverse-ETL engine.
//!
//! Analysts describe in YAML which warehouse rows land in which CRM object and how fields
//! map. The pipeline, one module per stage:
//!
//! - [`yaml`]: YAML with a position on every node;
//! - [`config`]: the file format (`ebb.yaml`, `models/*.yaml`) as serde types;
//! - [`schema`]: the JSON schemas generated from those types;
//! - [`validate`]: every check, collected as [`diagnostics`] with file:line:col;
//! - [`plan`]: the compiled, resolved form of a model that a run executes;
//! - [`source`]: warehouses streaming a query's rows as Arrow batches;
//! - [`state`]: snapshots, run history and row errors (SQLite or PostgreSQL);
//! - [`map`]: source rows to destination records (paths, transforms, exact JSON);
//! - [`schedule`], [`transform`], [`path`]: the pieces a plan is made of;
//! - [`redact`]: credentials masked out of every URL and message ebb prints or stores;
//! - [`daemon`]: `ebb daemon`: schedules, hot reload, the HTTP API, graceful shutdown;
//! - [`cli`]: the `ebb` command.

pub mod cli;
pub mod config;
pub mod daemon;
#[cfg(feature = "duckdb")]
pub mod demo;
pub mod destination;
pub mod diagnostics;
pub mod engine;
pub mod http;
pub mod map;
pub mod path;
pub mod plan;
pub mod redact;
pub mod sandbox;
pub mod schedule;
pub mod schema;
pub mod source;
pub mod state;
pub mod transform;
pub mod validate;
pub mod yaml;
