//! `ebb keys rotate`: every value kept sealed ([`crate::crypt`]) sealed anew under the
//! current key: webhook event bodies, conflict values and conflict bases, including those
//! kept in clear before a key was set.
//!
//! A row is rewritten only if it still holds the text read (compare and set), so a run or
//! a webhook writing the same row meanwhile (already under the current key) is never
//! overwritten with an older value.

use super::StateError;
use crate::crypt::Keys;

/// A column holding sealed text: its table, the columns identifying a row, and the
/// associated data the values are sealed with.
pub(crate) struct SealedColumn {
    pub table: &'static str,
    pub ids: &'static [&'static str],
    pub column: &'static str,
    pub aad: &'static str,
}

pub(crate) const SEALED: &[SealedColumn] = &[
    SealedColumn {
        table: "ebb_inbox",
        ids: &["seq"],
        column: "body",
        aad: super::inbox::BODY,
    },
    SealedColumn {
        table: "ebb_conflicts",
        ids: &["id"],
        column: "warehouse_value",
        aad: super::conflicts::VALUE,
    },
    SealedColumn {
        table: "ebb_conflicts",
        ids: &["id"],
        column: "crm_value",
        aad: super::conflicts::VALUE,
    },
    SealedColumn {
        table: "ebb_conflict_base",
        ids: &["model", "key"],
        column: "fields",
        aad: super::conflicts::BASE,
    },
];

/// A row's ids (as text), the text it holds and the text to put in its place.
pub(crate) type Swap = (Vec<String>, String, String);

/// What a rotation did, per table and column.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resealed {
    /// (`table.column`, values sealed anew, values already under the current key).
    pub columns: Vec<(String, u64, u64)>,
}

impl super::StateStore {
    /// Seals every kept value anew under the current key of `keys`. Fails, changing
    /// nothing more, on the first value that does not open (a key missing from `keys`).
    pub async fn reseal(&self, keys: &Keys) -> Result<Resealed, StateError> {
        self.inbox_init().await?;
        self.conflicts_init().await?;
        let mut out = Resealed::default();
        for col in SEALED {
            let rows = dispatch!(self, s => s.sealed_texts(col).await)?;
            let mut swaps: Vec<Swap> = Vec::new();
            let mut current = 0u64;
            for (ids, text) in rows {
                if !keys.stale(&text) {
                    current += 1;
                    continue;
                }
                let plain = keys.open(col.aad, &text)?;
                swaps.push((ids, text, keys.seal(col.aad, &plain)));
            }
            let n = swaps.len() as u64;
            if n > 0 {
                dispatch!(self, s => s.swap_texts(col, swaps).await)?;
            }
            out.columns.push((format!("{}.{}", col.table, col.column), n, current));
        }
        Ok(out)
    }
}

/// `CAST(a AS TEXT), CAST(b AS TEXT)` for the ids of `col`.
pub(crate) fn id_list(col: &SealedColumn) -> String {
    col.ids
        .iter()
        .map(|i| format!("CAST({i} AS TEXT)"))
        .collect::<Vec<_>>()
        .join(", ")
}
