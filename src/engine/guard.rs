//! The guard: after the diff and before anything is sent, refuses a run that would change or
//! delete more of the destination than the model allows (`max_change_ratio`, `max_deletes`,
//! `max_delete_ratio`). The first sync is exempt.
//!
//! It only says why it refuses; what a refusal does (abort, or a note under `--force` or
//! `--dry-run`) is the run's call ([`super::run`]).

use super::run::{plural, Run};
use super::table::SnapTable;
use crate::config::{Mode, OnRemoved};

impl<'a> Run<'a> {
    /// Why the guard refuses this run, if it does.
    pub(super) fn guard(&self, table: &SnapTable) -> Option<String> {
        let g = self.cfg.plan.guard;
        if table.is_empty() {
            return None; // the first sync is exempt
        }
        let confirmed = table.len() as f64;
        let touched = self.counts.changed + self.counts.removed;
        if let Some(max) = g.max_change_ratio {
            let ratio = touched as f64 / confirmed;
            if ratio > max {
                return Some(format!(
                    "{} of the {} rows confirmed in the destination would change ({} changed, {} removed), \
                     over `max_change_ratio: {max}`",
                    percent(ratio),
                    table.len(),
                    self.counts.changed,
                    self.counts.removed
                ));
            }
        }
        let verb = if self.cfg.plan.destination.on_removed == OnRemoved::Clear
            && self.cfg.plan.destination.mode != Mode::Delete
        {
            "cleared"
        } else {
            "deleted"
        };
        let default = |d: bool, key: &str| {
            if d {
                format!(
                    " (the default for a model that deletes; set `guard: {{{key}: …}}` in the model to change it, or `off`)"
                )
            } else {
                String::new()
            }
        };
        if let Some(max) = g.max_deletes {
            if self.diff.deletes as u64 > max {
                return Some(format!(
                    "{} would be {verb}, over `max_deletes: {max}`{}",
                    plural(self.diff.deletes, "record"),
                    default(g.default_max_deletes, "max_deletes")
                ));
            }
        }
        if let Some(max) = g.max_delete_ratio {
            let ratio = self.diff.deletes as f64 / confirmed;
            if ratio > max {
                return Some(format!(
                    "{} of the {} rows confirmed in the destination would be {verb} ({}), over `max_delete_ratio: {max}`{}",
                    percent(ratio),
                    table.len(),
                    self.diff.deletes,
                    default(g.default_max_delete_ratio, "max_delete_ratio")
                ));
            }
        }
        None
    }
}

fn percent(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}
