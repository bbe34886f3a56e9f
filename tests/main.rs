//! The integration tests: one binary, one module per topic.

#[macro_use]
mod support;

#[cfg(feature = "duckdb")]
mod alerts; // alerts through `ebb daemon` to fakes of Slack, PagerDuty and a webhook; `ebb alerts test`; the seed's block
mod alerts_email; // alert mail over STARTTLS and implicit TLS to an SMTP server with an openssl-made certificate
mod audit; // the audit log (batches, admin actions, refused requests, verify) and retention (`ebb purge`), both stores
mod certs; // an authority and a server certificate made by `openssl`, for TLS tests
mod cli; // the `ebb` binary: exit codes, output formats, `plan`, `schema`
#[cfg(feature = "duckdb")]
mod conflicts; // two-way fields: conflicts found and decided by each policy, review, resolve, crm_state, kill -9
mod connect; // `validate --connect` against a real warehouse
mod daemon; // `ebb daemon`: schedules, hot reload, the HTTP API, signals, two daemons on one store
mod daemon_tls; // `daemon.tls`: HTTPS checked by curl and openssl s_client, TLS 1.1 refused
#[cfg(feature = "duckdb")]
mod demo; // `ebb demo`: the quickstart
mod destination; // the http and file destinations: wire format, retries, limits, files
#[cfg(feature = "duckdb")]
mod engine; // the sync engine on DuckDB without PostgreSQL: the delivery contract, guards, faults, IO off the runtime
mod examples; // every model in models/ and the seed's example validate
mod fixtures; // tests/fixtures/invalid*: one problem each, code and line:column exact
#[cfg(feature = "duckdb")]
mod hubspot; // the hubspot destination against the sandbox: batches of 100, 207 matched to rows, case-duplicate keys split, archive, the daily limit, pacing by the rate-limit headers, dates
mod hubspot_inbound; // HubSpot as an inbound source into DuckDB: list then search windows, archived records, past 10,000 by keyset, the daily limit mid-pull
mod hubspot_modes; // the hubspot destination's update and insert modes, and the search API's SECONDLY 429 met by an inbound read
#[cfg(feature = "duckdb")]
mod hubspot_oauth; // a hubspot connection over an OAuth refresh token: one token for concurrent batches, expiry mid-run renewed, renewal before lapse, a refused refresh token; deals and the custom object
#[cfg(feature = "duckdb")]
mod inbound; // inbound runs: Salesforce (the sandbox) into DuckDB and PostgreSQL tables, windows, deletes, faults
#[cfg(feature = "duckdb")]
mod inbound_connect; // `validate --connect` on inbound models: the object's fields, the table's columns
#[cfg(feature = "duckdb")]
mod logging; // the log: a retry inside a run carries its model and run_id; EBB_LOG; no secret in a line
mod map; // the mapping layer on Arrow batches
#[cfg(feature = "duckdb")]
mod pii; // a planted personal value nowhere in clear: output, API, page, log, state files (sealed); key rotation
mod plan_inbound; // inbound models as compiled: defaults, cursor, fields read; `ebb plan` for them
mod postgres_tls; // sslmode=verify-full|verify-ca against a PostgreSQL cluster of the test's own with an openssl-made certificate
mod preview; // `ebb preview` against a real warehouse
mod py_client; // the independent Python clients: their venvs, required under CI, and running a check script
mod roles; // every role (viewer, operator, admin, none) against every endpoint of the daemon; refusals audited
mod salesforce; // the Salesforce destination against the sandbox: collections, Bulk 2.0, tokens, limits, --connect
mod sandbox; // `ebb sandbox`: the local Salesforce-compatible API's wire protocol over real HTTP, one module per part of src/sandbox/
mod sandbox_client; // `ebb sandbox` driven by an independent client (simple-salesforce, Python)
mod sandbox_hubspot; // the sandbox's HubSpot CRM v3 API over real HTTP: auth and OAuth tokens, properties, batch upsert/create/update/archive/read, 207, listing, rate limits, faults, deals and a custom object
mod schema; // schemas/ is what the types generate
mod sink; // an in-process webhook speaking the http destination's protocol, with faults
mod snowflake_pg; // that server's execution of statements on a PostgreSQL database of its own, held to the SQL API's rules
mod snowflake_server; // an in-process Snowflake SQL API v2 server
#[cfg(feature = "duckdb")]
mod source_duckdb; // the DuckDB source against a real embedded database
mod source_postgres; // the PostgreSQL source against the real server
mod source_salesforce; // the Salesforce source against the sandbox: REST and Bulk 2.0 query, windows, faults
mod source_snowflake; // the Snowflake source against that server
mod state; // the state store, one suite for SQLite and PostgreSQL
mod sync; // `ebb run` end to end: the delivery contract, crash safety, faults, both state stores
#[cfg(feature = "duckdb")]
mod table; // warehouse tables as a destination: DuckDB, PostgreSQL and Snowflake, upsert/append/mirror, deletes, one DuckDB writer
mod table_snowflake; // Snowflake tables: upper-case names, Snowflake's types, requests under 1 MB, one transaction a write, hostile values
mod webhooks; // signed webhooks into `ebb daemon`: signatures by the reference library, the inbox, event-time order, dead letters, replay
