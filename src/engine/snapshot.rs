//! What a run starts from and leaves behind in the state store: the snapshot's owner (the
//! destination it was confirmed by), the keys an earlier run left in flight ([`Forced`]),
//! the snapshot loaded as a compact table ([`super::table`]) from the table file kept
//! between runs or from the store, keys forgotten from it, and the table saved for the next
//! run.
//!
//! It does not compare rows with the snapshot (that is [`super::diff`]) nor commit answers
//! of the destination (that is [`super::batch`]).

use super::error::RunError;
use super::run::{destination_identity, Run};
use super::table::{key_hash, SnapTable};
use super::testing;
use crate::state::{InflightBatch, StateWrite};
use std::path::Path;
use tokio::sync::mpsc;

/// A key an earlier run left in flight.
pub(super) struct Forced {
    pub(super) key: String,
    /// Read from the model in this run.
    pub(super) seen: bool,
    /// Sent (or forgotten) by this run, so the earlier in-flight record can go.
    pub(super) resolved: bool,
}

impl<'a> Run<'a> {
    /// Whether the snapshot belongs to the plan's destination. When the destination changed,
    /// what the old one confirmed does not count: the run is a full sync (`true`) and, unless
    /// it is a dry run, the old snapshot is forgotten. Records the destination for next time.
    pub(super) async fn check_destination(&mut self) -> Result<bool, RunError> {
        let name = self.cfg.plan.name.clone();
        let identity = destination_identity(self.cfg.plan);
        let known = self.cfg.store.model_destination(&name).await?;
        let mut fresh = false;
        if let Some(old) = known.as_deref().filter(|old| *old != identity) {
            fresh = true;
            self.notes.push(format!(
                "the destination changed (was {old}, now {identity}): what the old one confirmed does not \
                 count, so this run is a full sync{}",
                if self.cfg.opts.dry_run {
                    ""
                } else {
                    " (the old snapshot is forgotten)"
                }
            ));
            if !self.cfg.opts.dry_run {
                self.cfg.store.forget(&name).await?;
            }
        }
        if !self.cfg.opts.dry_run && known.as_deref() != Some(identity.as_str()) {
            self.cfg.store.set_model_destination(&name, &identity).await?;
        }
        Ok(fresh)
    }

    /// Keys of batches an earlier run sent without an answer: sent again whatever their hash.
    pub(super) async fn load_inflight(&mut self) -> Result<(), RunError> {
        for b in self.cfg.store.inflight(self.name()).await? {
            for key in b.keys {
                self.diff.forced.insert(
                    key_hash(&key),
                    Forced {
                        key,
                        seen: false,
                        resolved: false,
                    },
                );
            }
        }
        Ok(())
    }

    /// In-flight records of earlier runs, once this run delivered: keeps the keys it did not
    /// settle.
    pub(super) async fn settle_forced(&mut self) -> Result<(), RunError> {
        if self.diff.forced.values().any(|f| f.resolved) {
            let keep: Vec<String> = self
                .diff
                .forced
                .values()
                .filter(|f| !f.resolved)
                .map(|f| f.key.clone())
                .collect();
            self.ctx
                .write(vec![StateWrite::ReplaceInflight {
                    run_id: self.cfg.run_id,
                    keep: (!keep.is_empty()).then(|| InflightBatch {
                        run_id: self.cfg.run_id,
                        batch: 0,
                        op: "unknown".into(),
                        keys: keep,
                    }),
                }])
                .await?;
        }
        Ok(())
    }

    /// Where the key log of the model's diff table is kept ([`super::keylog`]).
    pub(super) fn key_log_path(&self) -> std::path::PathBuf {
        self.table_path().with_extension("keys")
    }

    /// Where the model's diff table is kept between runs ([`SnapTable::save`]).
    fn table_path(&self) -> std::path::PathBuf {
        let safe: String = self
            .name()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.cfg.project_dir.join(".ebb/tables").join(format!(
            "{safe}-{:016x}.table",
            xxhash_rust::xxh3::xxh3_64(self.name().as_bytes())
        ))
    }

    /// Keeps the diff table for the next run, stamped with the snapshot's token, when it
    /// holds exactly what the state store holds; otherwise removes a stale copy.
    pub(super) async fn save_table(&mut self, table: SnapTable) -> Result<(), RunError> {
        let path = self.table_path();
        let now = self.cfg.store.snapshot_token(self.name()).await?;
        let (loaded, from_file) = self.loaded;
        let token = if self.failure.is_some() {
            None // an answer may be committed that the table lacks
        } else if now == Some(self.token) {
            Some(self.token) // this run changed the snapshot, and the table with it
        } else if now != loaded {
            None // changed by someone else
        } else if from_file {
            return Ok(()); // unchanged, and saved already
        } else if let Some(t) = now {
            Some(t)
        } else {
            // A snapshot from before tokens: stamp it.
            self.ctx.write(vec![StateWrite::SnapshotToken(self.token)]).await?;
            Some(self.token)
        };
        // The file is written off the async runtime: a slow disk must not stall the tasks
        // beside the run (the lock's heartbeat).
        let name = self.cfg.plan.name.clone();
        let at = path.clone();
        let saved = tokio::task::spawn_blocking(move || {
            testing::io_point(&name, "save_table");
            let Some(token) = token else {
                let _ = std::fs::remove_file(&at);
                return Ok(());
            };
            let saved = std::fs::create_dir_all(at.parent().unwrap_or(Path::new(".")))
                .and_then(|()| table.save(&at, &name, token));
            if saved.is_err() {
                let _ = std::fs::remove_file(&at);
            }
            saved
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = saved {
            // Only speed is lost: the next run reads the snapshot from the state store.
            self.notes
                .push(format!("cannot keep the diff table in {}: {e}", path.display()));
        }
        Ok(())
    }

    pub(super) async fn load_snapshot(&mut self) -> Result<SnapTable, RunError> {
        let token = self.cfg.store.snapshot_token(self.name()).await?;
        if let Some(t) = token {
            let (path, name) = (self.table_path(), self.cfg.plan.name.clone());
            let cached = tokio::task::spawn_blocking(move || SnapTable::load(&path, &name, t)).await?;
            if let Some(table) = cached {
                self.loaded = (token, true);
                return Ok(table);
            }
        }
        self.loaded = (token, false);
        let rows = self.cfg.store.snapshot_len(self.name()).await?;
        let mut table = SnapTable::with_rows(rows as usize);
        let (tx, mut rx) = mpsc::channel(4);
        let scan = self.cfg.store.scan_snapshot_keyed(self.name(), key_hash, tx);
        let fill = async {
            while let Some(chunk) = rx.recv().await {
                for (kh, hash) in chunk {
                    if table.is_full() {
                        table.grow();
                    }
                    table.insert(kh, hash);
                }
            }
        };
        let (scanned, ()) = tokio::join!(scan, fill);
        scanned?;
        Ok(table)
    }

    /// Keys that left the model and are not deleted from the destination leave the
    /// snapshot, in the store and in the table.
    pub(super) async fn forget(&self, keys: Vec<String>, table: &mut SnapTable) -> Result<(), RunError> {
        let hashes: Vec<u128> = keys.iter().map(|k| key_hash(k)).collect();
        self.ctx.write(vec![StateWrite::Remove { keys }]).await?;
        for kh in hashes {
            table.remove(kh);
        }
        Ok(())
    }
}
