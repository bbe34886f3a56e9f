//! `ebb keys generate|rotate`: the key values are sealed under at rest ([`crate::crypt`]).

use super::history::one_model;
use crate::crypt::Keys;
use std::path::PathBuf;

/// Prints a new key for `EBB_ENCRYPTION_KEY` (its id: `id`, else `kYYYYMMDD`).
pub fn generate(id: Option<&str>) -> anyhow::Result<u8> {
    let id = id
        .map(str::to_string)
        .unwrap_or_else(|| chrono::Utc::now().format("k%Y%m%d").to_string());
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        eprintln!("error: a key id is letters, digits, `-` or `_`, not `{id}`");
        return Ok(2);
    }
    println!("{}", crate::crypt::generate(&id));
    Ok(0)
}

/// Seals every kept value anew under `EBB_ENCRYPTION_KEY`.
pub fn rotate(project: Option<PathBuf>) -> anyhow::Result<u8> {
    let keys = match Keys::global() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let Some(current) = keys.current_id() else {
        eprintln!(
            "error: `EBB_ENCRYPTION_KEY` is not set: there is no key to seal under (`ebb keys generate` makes one)"
        );
        return Ok(2);
    };
    let (report, store, rt) = match one_model(project, "")? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    match rt.block_on(store.reseal(keys)) {
        Ok(r) => {
            let entry = crate::audit::NewAudit::new(crate::audit::cli_actor(), crate::audit::Action::KeysRotated)
                .detail(serde_json::json!({
                    "key_id": current,
                    "sealed": r.columns.iter().map(|(c, n, _)| (c.clone(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
                }));
            if let Err(code) = super::audit::record(&rt, &store, &report.secrets, entry) {
                return Ok(code);
            }
            for (column, sealed, already) in &r.columns {
                println!("{column}: {sealed} sealed anew under `{current}`, {already} already under it");
            }
            println!("done: the keys in `EBB_ENCRYPTION_KEYS_OLD` are no longer needed by this store");
            Ok(0)
        }
        Err(e) => {
            eprintln!(
                "error: {} (nothing was lost: the values already sealed anew stay readable under `{current}`)",
                crate::redact::text(&e.to_string())
            );
            Ok(1)
        }
    }
}
