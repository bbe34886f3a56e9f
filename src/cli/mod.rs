//! The `ebb` command line: argument parsing and one function per subcommand.
//!
//! Exit codes (docs/delivery.md §2): 0 success; 1 failure (invalid config, a failed run);
//! 2 bad usage or unreadable project files; 3 a run whose destination rejected rows.

mod alerts;
mod audit;
mod conflicts;
mod daemon;
#[cfg(feature = "duckdb")]
mod demo;
mod history;
mod inbox;
mod keys;
mod plan;
mod preview;
mod run;
mod sandbox;
mod schema;
mod table;
mod validate;

use crate::diagnostics::render::Format;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use table::{cell, header, json_lines, text_table};

/// ebb: declarative reverse ETL. Warehouse rows to CRM objects, described in YAML.
#[derive(Debug, Parser)]
#[command(name = "ebb", version, about, long_about = None)]
pub struct Cli {
    /// The project directory (holding `ebb.yaml`). Default: the current directory or the
    /// closest parent with an `ebb.yaml`.
    #[arg(long, short = 'C', global = true, env = "EBB_PROJECT", value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// When to colour output.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

impl Color {
    /// Whether to colour what goes to standard output.
    pub fn enabled(self) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the project and model files offline and report every problem with its
    /// file:line:column.
    Validate {
        /// Model files or directories to report on (default: the whole project). Files
        /// outside the models directory are validated against the project too.
        paths: Vec<PathBuf>,
        /// Output format: `human` (coloured on a terminal), `json`, or `github`
        /// (workflow annotations for pull requests).
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Fail (exit 1) on warnings too.
        #[arg(long)]
        deny_warnings: bool,
        /// Also check against the live systems: describe each query and check the columns
        /// the key, mappings, paths and transforms use (needs the connections' credentials).
        #[arg(long)]
        connect: bool,
    },
    /// Print the compiled plan of models, offline: connections, query, keys, mappings with
    /// their compiled paths and transforms, batch size and the next scheduled runs.
    Plan {
        /// Names of the models (default: all).
        models: Vec<String>,
        /// `human` or `json`.
        #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
        format: PlanFormat,
    },
    /// Show the first rows of a model as the destination would receive them: the query
    /// runs (with a LIMIT), rows are mapped and transformed, nothing is sent.
    Preview {
        /// Name of the model.
        model: String,
        /// How many rows.
        #[arg(long, short = 'n', default_value_t = 10)]
        limit: usize,
        /// `human` (a table) or `json` (one object per line).
        #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
        format: PlanFormat,
        /// Show the values of `pii: true` fields instead of masking them.
        #[arg(long)]
        show_pii: bool,
    },
    /// Run models once: read, diff against what the destination confirmed, send only the
    /// changes. Exit 0 on success, 1 if a run failed or was refused, 3 if the destination
    /// rejected rows (or rows were invalid).
    Run {
        /// Names of the models.
        models: Vec<String>,
        /// Run every model of the project.
        #[arg(long, conflicts_with = "models")]
        all: bool,
        /// Read and diff, then print the counts and up to 5 sample payloads per kind of
        /// change; send nothing, record nothing.
        #[arg(long)]
        dry_run: bool,
        /// Send every row, whatever the snapshot says (inbound: read every record, whatever the watermark).
        #[arg(long)]
        full_resync: bool,
        /// Run even if the guard refuses (mass change); in insert mode, also re-send rows
        /// of an interrupted batch.
        #[arg(long)]
        force: bool,
        /// `human` (progress and a summary) or `json` (the summary).
        #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
        format: PlanFormat,
    },
    /// The run history of a model, newest first.
    Runs {
        model: String,
        /// How many runs.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
        format: PlanFormat,
    },
    /// The rejected and invalid rows of a model: key, code and message of the latest error.
    Errors {
        model: String,
        #[arg(long, short = 'n', default_value_t = 100)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
        format: PlanFormat,
    },
    /// Health of every model (or one): last run, time since the last success, rows in the
    /// snapshot and in flight, row errors, next scheduled run.
    Status {
        model: Option<String>,
        #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
        format: PlanFormat,
    },
    /// Forget a model's snapshot: the next run sends every row again.
    Reset { model: String },
    /// The audit log as JSON lines, oldest first: every change ebb made outside itself and
    /// every administrative action, with who did it; `ebb audit verify` checks its chain.
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        action: Option<AuditAction>,
        /// Entries at or after this time: RFC 3339 (`2025-01-31T08:00:00Z`), a date
        /// (`2025-01-31`, UTC) or a duration back from now (`90m`, `24h`, `7d`).
        #[arg(long, value_name = "TIME|DURATION")]
        since: Option<String>,
        /// One model's entries.
        #[arg(long)]
        model: Option<String>,
        /// One action's entries: write, run_triggered, reset, conflict_resolved,
        /// inbox_replayed, config_reloaded, purge, api_refused.
        #[arg(long = "action", value_name = "ACTION")]
        action_name: Option<String>,
    },
    /// Remove what `retention:` no longer keeps (run history, row errors, webhook events,
    /// conflicts, audit entries) and print the rows removed per table; the purge itself
    /// is audited.
    Purge {
        /// Count what would go; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Webhook models' inboxes: events pending, applied and dead letters (all models, or
    /// one with its newest pending events and dead letters); `ebb inbox replay MODEL
    /// [EVENT_ID…]` puts dead letters back.
    #[command(args_conflicts_with_subcommands = true)]
    Inbox {
        #[command(subcommand)]
        action: Option<InboxAction>,
        /// A webhook model (default: every one, counts only).
        model: Option<String>,
        /// The statuses listed: pending, applied, superseded, ignored, dead, rejected,
        /// replayed (default: pending, dead and rejected).
        #[arg(long, value_delimiter = ',')]
        status: Vec<String>,
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
        format: PlanFormat,
    },
    /// The encryption key of the values kept at rest (`EBB_ENCRYPTION_KEY`): make one, or
    /// seal everything anew under a new one.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Alerts of ebb.yaml: per alert and model, whether it fires, the figure now, since
    /// when, and what could not be delivered; `ebb alerts test [NAME]` sends a test
    /// notification through each channel.
    #[command(args_conflicts_with_subcommands = true)]
    Alerts {
        #[command(subcommand)]
        action: Option<AlertsAction>,
        #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
        format: PlanFormat,
    },
    /// Conflicts of two-way fields (models with `conflicts`): rows held for review and
    /// the decisions made; `ebb conflicts resolve MODEL KEY --take warehouse|crm` decides a
    /// held record, `ebb conflicts export` writes every decision into a warehouse table.
    #[command(args_conflicts_with_subcommands = true)]
    Conflicts {
        #[command(subcommand)]
        action: Option<ConflictsAction>,
        /// A model with `conflicts` (default: every one).
        model: Option<String>,
        /// One record's conflicts.
        #[arg(long)]
        key: Option<String>,
        /// The statuses listed: open, decided, resolved, superseded, or all (default: open).
        #[arg(long, value_delimiter = ',')]
        status: Vec<String>,
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
        format: PlanFormat,
    },
    /// The quickstart: build the demo warehouse (embedded DuckDB, seeded customer data),
    /// check every model against it and show what each would send.
    #[cfg(feature = "duckdb")]
    Demo {
        /// Customers in the demo warehouse.
        #[arg(long, default_value_t = 10_000)]
        customers: usize,
        /// Seed of the generated data: the same seed builds the same warehouse.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Replace an existing demo warehouse.
        #[arg(long)]
        rebuild: bool,
    },
    /// Run every model on its schedule, with an HTTP API (`/healthz`, `/readyz`, `/metrics`,
    /// `/api/models`, `/api/runs`), a status page at `/`, alerts, hot reload of model files and graceful shutdown
    /// (SIGTERM/SIGINT: runs in progress finish their batches; a second signal exits at once).
    Daemon {
        /// Address of the HTTP server, overriding `daemon.listen` (port 0: any free port;
        /// the address is logged at start-up).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Seconds runs in progress get to finish their batches after SIGTERM/SIGINT; runs
        /// still going then are abandoned and the daemon exits 1 (their unconfirmed batches
        /// are sent again by the next run).
        #[arg(long, value_name = "SECS", default_value_t = 25.0)]
        shutdown_timeout: f64,
        /// `human` (a timestamped line per event) or `json` (an object per line).
        #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Human)]
        log_format: crate::logging::LogFormat,
        /// The least important events logged.
        #[arg(long, value_enum, default_value_t = crate::logging::Level::Info)]
        log_level: crate::logging::Level,
    },
    /// A local Salesforce-compatible API (OAuth, REST, sObject Collections, Bulk API 2.0,
    /// SOQL) to sync into without an org; serves until Ctrl-C, one log line per request.
    Sandbox {
        /// Port on 127.0.0.1 (the example ebb.yaml's `instance_url` uses 8787; 0: any free port).
        #[arg(long, default_value_t = 8787)]
        port: u16,
        /// A JSON file describing the objects and fields (describe form), replacing the
        /// default `Contact`.
        #[arg(long, value_name = "FILE")]
        objects: Option<PathBuf>,
        /// Latency added to every API request, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// The daily API request allocation.
        #[arg(long, default_value_t = 100_000)]
        daily_limit: u64,
        /// How long the HubSpot API's OAuth access tokens live, in seconds (HubSpot's: 1800).
        #[arg(long, default_value_t = 1800, value_name = "SECS")]
        hubspot_token_lifetime: u64,
        /// Send a signed webhook (Standard Webhooks) to this URL for every record created,
        /// updated or deleted, e.g. `http://127.0.0.1:7878/webhooks/sandbox_contact_events`.
        #[arg(long, value_name = "URL")]
        webhook: Option<String>,
        /// The secret that signs them (`whsec_…`); default: `CRM_WEBHOOK_SECRET`, else the
        /// example project's demo secret.
        #[arg(long, value_name = "SECRET", env = "CRM_WEBHOOK_SECRET", hide_env_values = true,
              default_value = DEMO_WEBHOOK_SECRET, hide_default_value = true)]
        webhook_secret: String,
    },
    /// Print the JSON schema of model files, or write both schemas to `schemas/`.
    Schema {
        /// Write `schemas/model.schema.json` and `schemas/project.schema.json` in the project.
        #[arg(long, conflicts_with = "check")]
        write: bool,
        /// Exit 1 when the files in `schemas/` are not what this ebb generates.
        #[arg(long)]
        check: bool,
        /// Print the project-file schema instead of the model-file schema.
        #[arg(long, conflicts_with_all = ["write", "check"])]
        project_file: bool,
    },
}

/// The example project's webhook secret (`ebb.yaml`'s fallback for `CRM_WEBHOOK_SECRET`):
/// it means nothing anywhere else.
pub const DEMO_WEBHOOK_SECRET: &str = "whsec_ZWJiLWRlbW8td2ViaG9vay1zZWNyZXQtMDAwMQ==";

/// `ebb inbox` subcommands.
#[derive(Debug, Subcommand)]
pub enum InboxAction {
    /// Put a webhook model's dead letters (all, or those with the given event ids) back in
    /// its inbox: events that could not be mapped are applied again, refused requests read
    /// again with the model's current rules.
    Replay {
        model: String,
        event_ids: Vec<String>,
        #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
        format: PlanFormat,
    },
}

/// `ebb audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Recompute the audit log's hash chain: exit 0 with the number of entries when it is
    /// intact, 1 naming the first entry where it breaks (a field changed, an entry
    /// deleted, entries reordered).
    Verify,
}

/// `ebb alerts` subcommands.
#[derive(Debug, Subcommand)]
pub enum AlertsAction {
    /// Send a test notification through every channel of an alert (or of every alert).
    Test { name: Option<String> },
}

/// `ebb keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Print a new key for `EBB_ENCRYPTION_KEY` (`ID:BASE64` of 32 random bytes).
    Generate {
        /// The key's id (default: `kYYYYMMDD`).
        #[arg(long)]
        id: Option<String>,
    },
    /// Seal every value the state store keeps (webhook bodies, conflict values) anew under
    /// `EBB_ENCRYPTION_KEY`; the old keys stay needed (in `EBB_ENCRYPTION_KEYS_OLD`) until
    /// it has run.
    Rotate,
}

/// `ebb conflicts` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConflictsAction {
    /// Decide a held record: `--take warehouse` writes the warehouse's values to the CRM,
    /// `--take crm` keeps the CRM's; the model's next run applies it.
    Resolve {
        model: String,
        key: String,
        /// `warehouse` or `crm`.
        #[arg(long)]
        take: String,
        #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
        format: PlanFormat,
    },
    /// Write every conflict and its decision (the seed's `master_source` and
    /// `resolution_timestamp`) into a warehouse table, upserted by id; created when missing.
    Export {
        /// Only this model's.
        model: Option<String>,
        /// A DuckDB or PostgreSQL connection of ebb.yaml.
        #[arg(long)]
        connection: String,
        /// `schema.table` or `table`.
        #[arg(long)]
        table: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Human,
    Json,
}

/// Parses the process arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs what its flags say; every other command only what goes wrong beyond
    // what it prints itself (a retried request, say), unless `EBB_LOG` asks for more.
    let (format, level) = match &cli.command {
        Command::Daemon {
            log_format, log_level, ..
        } => (*log_format, *log_level),
        _ => (crate::logging::LogFormat::Human, crate::logging::Level::Warn),
    };
    if let Some(why) = crate::logging::init(format, level) {
        tracing::warn!(event = "log_filter_invalid", "{why}");
    }
    ExitCode::from(run(cli))
}

/// Runs a parsed command line and returns the exit code.
pub fn run(cli: Cli) -> u8 {
    let color = cli.color.enabled();
    let project = cli.project.clone();
    let result = match cli.command {
        Command::Validate {
            paths,
            format,
            deny_warnings,
            connect,
        } => validate::run(project, &paths, format, deny_warnings, connect, color),
        Command::Plan { models, format } => plan::run(project, &models, format, color),
        Command::Preview {
            model,
            limit,
            format,
            show_pii,
        } => preview::run(project, &model, limit, format, show_pii, color),
        Command::Run {
            models,
            all,
            dry_run,
            full_resync,
            force,
            format,
        } => run::run(
            project,
            &models,
            all,
            crate::engine::RunOptions {
                dry_run,
                full_resync,
                force,
                stop: None,
            },
            format,
            color,
        ),
        Command::Runs { model, limit, format } => history::runs(project, &model, limit, format),
        Command::Errors { model, limit, format } => history::errors(project, &model, limit, format),
        Command::Status { model, format } => history::status(project, model.as_deref(), format),
        Command::Reset { model } => history::reset(project, &model),
        Command::Audit {
            action: Some(AuditAction::Verify),
            ..
        } => audit::verify(project),
        Command::Audit {
            action: None,
            since,
            model,
            action_name,
        } => audit::show(project, since.as_deref(), model, action_name),
        Command::Purge { dry_run } => audit::purge(project, dry_run),
        Command::Inbox {
            action:
                Some(InboxAction::Replay {
                    model,
                    event_ids,
                    format,
                }),
            ..
        } => inbox::replay(project, &model, &event_ids, format),
        Command::Inbox {
            action: None,
            model,
            status,
            limit,
            format,
        } => inbox::show(project, model.as_deref(), &status, limit, format),
        Command::Alerts {
            action: Some(AlertsAction::Test { name }),
            ..
        } => alerts::test(project, name.as_deref()),
        Command::Alerts { action: None, format } => alerts::show(project, format),
        Command::Keys {
            action: KeysAction::Generate { id },
        } => keys::generate(id.as_deref()),
        Command::Keys {
            action: KeysAction::Rotate,
        } => keys::rotate(project),
        Command::Conflicts {
            action:
                Some(ConflictsAction::Resolve {
                    model,
                    key,
                    take,
                    format,
                }),
            ..
        } => conflicts::resolve(project, &model, &key, &take, format),
        Command::Conflicts {
            action:
                Some(ConflictsAction::Export {
                    model,
                    connection,
                    table,
                }),
            ..
        } => conflicts::export(project, model.as_deref(), &connection, &table),
        Command::Conflicts {
            action: None,
            model,
            key,
            status,
            limit,
            format,
        } => conflicts::show(project, model.as_deref(), key.as_deref(), &status, limit, format),
        #[cfg(feature = "duckdb")]
        Command::Demo {
            customers,
            seed,
            rebuild,
        } => demo::run(project, customers, seed, rebuild, color),
        Command::Daemon {
            listen,
            shutdown_timeout,
            ..
        } => daemon::run(project, listen, shutdown_timeout),
        Command::Schema {
            write,
            check,
            project_file,
        } => schema::run(project, write, check, project_file),
        Command::Sandbox {
            port,
            objects,
            latency_ms,
            daily_limit,
            hubspot_token_lifetime,
            webhook,
            webhook_secret,
        } => sandbox::run(
            port,
            objects.as_deref(),
            latency_ms,
            daily_limit,
            hubspot_token_lifetime,
            webhook.map(|url| crate::sandbox::WebhookTarget {
                url,
                secret: webhook_secret,
            }),
        ),
    };
    match result {
        Ok(code) => code,
        // `ebb validate | head`: the reader left; like other Unix tools, stop quietly.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            0
        }
        Err(e) => {
            // Errors can quote file names, paths and text from outside: no escape
            // sequences reach the terminal, no URL credentials the screen.
            let text = crate::redact::text(&format!("{e:#}"));
            let head = if color_stderr() {
                "\x1b[1;31merror:\x1b[0m"
            } else {
                "error:"
            };
            eprintln!("{head} {}", crate::diagnostics::terminal_safe(&text, true));
            2
        }
    }
}

fn color_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// The project directory: `--project`, else the closest directory with `ebb.yaml`.
fn project_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match flag {
        Some(p) => {
            if p.join(crate::config::PROJECT_FILE).is_file() {
                Ok(p)
            } else {
                anyhow::bail!("`{}` has no `ebb.yaml`", p.display())
            }
        }
        None => Ok(crate::config::files::find_project(&std::env::current_dir()?)?),
    }
}
