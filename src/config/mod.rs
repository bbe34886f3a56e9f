//! The config format: project file and model files as written (`*Spec` types), how they
//! are found and loaded, and `${VAR}` references.

pub mod alerts;
pub mod conflicts;
pub mod env;
pub mod files;
pub mod model;
pub mod project;
pub mod retention;

pub use model::{ConnectionType, MappingSpec, Mode, ModelFile, ModelSpec, OnRemoved};
pub use project::{ConnectionSpec, ProjectSpec};

/// Name of the project file.
pub const PROJECT_FILE: &str = "ebb.yaml";

/// Field names whose values are secrets: they must be `${VAR}` references.
pub fn is_secret_key(key: &str) -> bool {
    matches!(
        key,
        "client_secret"
            | "password"
            | "token"
            | "private_key"
            | "secret"
            | "refresh_token"
            | "api_token"
            | "routing_key"
    ) || key.ends_with("_secret")
        || key.ends_with("_password")
}

/// HTTP header names whose values are credentials.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('_', "-");
    [
        "auth",
        "token",
        "secret",
        "password",
        "passwd",
        "cookie",
        "session",
        "signature",
        "credential",
        "api-key",
        "apikey",
    ]
    .iter()
    .any(|w| n.contains(w))
        || n.ends_with("-key")
}
