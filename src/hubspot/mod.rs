//! The HubSpot connection layer both directions share: credentials, one connection's
//! limits, requests and how their failures are sorted ([`client::Conn`]), paced by the
//! account's rate window ([`pace`]). The destination (`destination::hubspot`) writes
//! through it, the source (`source::hubspot`) reads.

pub(crate) mod auth;
pub mod client;
pub mod pace;
pub mod properties;

pub use client::{CallError, Conn, ConnectionError};
pub use properties::Property;
