//! Inbound webhooks, the parts without IO: checking a request's signature on its raw bytes
//! ([`signature`]) and reading a verified body into events ([`event`]).
//!
//! The rest of the path lives with the layer it belongs to: the daemon's listener answers
//! `POST /webhooks/{model}` (`daemon::server::webhooks`), the state store keeps the inbox
//! ([`crate::state::inbox`]), and the engine applies pending events to the model's table
//! (`engine::webhook`). docs/webhooks.md is the user's view of all of it.

pub mod event;
pub mod signature;

pub use event::{parse_time, Action, EventError, EventPath, EventRules, Incoming};
pub use signature::{Scheme, SignatureError, Verified, Verifier};
