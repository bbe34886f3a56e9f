//! The Salesforce connection layer, shared by both directions: OAuth tokens ([`auth`]),
//! one [`client::Conn`] per connection with its limits, call counting, request helpers and
//! the org's API usage header, and the reader of Bulk results' CSV ([`csv`]). A request
//! fails with a [`client::CallError`] (transient or fatal), which the caller turns into its
//! own error.
//!
//! It knows nothing of batches, records or queries: the destination
//! (`destination::salesforce`: sObject Collections, Bulk ingest jobs) and a source
//! reading from Salesforce both build on it, so neither owns it.

pub mod auth;
pub mod client;
pub mod csv;
