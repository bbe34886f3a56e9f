//! Printing a plan: `ebb plan` for people and as JSON.

use super::{InboundRead, SyncPlan, ValueSource};
use crate::config::model::ReadApi;
use crate::path::FieldPath;
use chrono::{DateTime, Utc};
use std::fmt::Write;

/// The plan as text, with the next three scheduled runs after `now`.
pub fn explain(plan: &SyncPlan, now: DateTime<Utc>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "model {}  ({})", plan.name, plan.file.display());
    if let Some(d) = &plan.description {
        let _ = writeln!(o, "  {d}");
    }
    let s = &plan.source;
    let _ = writeln!(o, "source:       connection `{}` ({})", s.connection, s.kind);
    if let Some(q) = &s.query {
        let mut lines = q.trim_end().lines();
        if let Some(first) = lines.next() {
            let _ = writeln!(o, "  query:      {first}");
            for l in lines {
                let _ = writeln!(o, "              {l}");
            }
        }
        match &s.columns {
            Some(c) => {
                let _ = writeln!(o, "  columns:    {}", c.join(", "));
            }
            None => {
                let _ = writeln!(o, "  columns:    known when the query runs");
            }
        }
    }
    if let Some(obj) = &s.object {
        let _ = writeln!(o, "  object:     {obj}");
        let fields: Vec<String> = s
            .fields
            .iter()
            .map(|f| {
                if s.added_fields.contains(f) {
                    format!("{f} (added)")
                } else {
                    f.clone()
                }
            })
            .collect();
        let _ = writeln!(o, "  fields:     {}", fields.join(", "));
    }
    if let Some(r) = &s.read {
        explain_read(&mut o, r, s.kind == crate::config::ConnectionType::Hubspot);
    }
    if let Some(w) = &s.webhook {
        let _ = writeln!(
            o,
            "  endpoint:   POST /webhooks/{} on `ebb daemon` (signed; no API token)",
            plan.name
        );
        let events: Vec<String> = w
            .rules
            .events
            .iter()
            .map(|(t, a)| format!("{t} → {}", a.as_str()))
            .collect();
        let _ = writeln!(o, "  events:     {}", events.join(", "));
        let paths = |p: &[crate::webhook::EventPath]| p.iter().map(|p| p.text.clone()).collect::<Vec<_>>().join(" or ");
        let _ = writeln!(o, "  type at:    {}", paths(&w.rules.event_type));
        let _ = writeln!(
            o,
            "  id at:      {}",
            w.rules
                .event_id
                .as_ref()
                .map_or("the signed message id, else a hash of the event".to_string(), |p| p
                    .text
                    .clone())
        );
        let _ = writeln!(
            o,
            "  time at:    {}",
            w.rules
                .event_time
                .as_ref()
                .map_or("the signed timestamp, else the time of receipt".to_string(), |p| p
                    .text
                    .clone())
        );
        let _ = writeln!(o, "  record at:  {}", w.rules.record.text);
        let fields: Vec<String> = w
            .fields
            .iter()
            .map(|(f, t)| {
                let added = if s.added_fields.contains(f) { ", added" } else { "" };
                format!("{f} ({}{added})", t.as_str())
            })
            .collect();
        let _ = writeln!(o, "  fields:     {}", fields.join(", "));
    }
    let d = &plan.destination;
    let target = d
        .object
        .as_deref()
        .or(d.table.as_deref())
        .map(|t| format!(" → {t}"))
        .unwrap_or_default();
    let _ = writeln!(o, "destination:  connection `{}` ({}){target}", d.connection, d.kind);
    match d.on_deleted {
        Some(od) => {
            match &d.version_column {
                Some(v) => {
                    let _ = writeln!(
                        o,
                        "  mode:       {} (a row per version, by column `{v}`)",
                        d.mode.as_str()
                    );
                }
                None => {
                    let _ = writeln!(o, "  mode:       {}", d.mode.as_str());
                }
            }
            let deleted = match (&d.deleted_column, d.deleted_column_added) {
                (Some(c), true) => format!(": the row stays, column `{c}` (added) set true"),
                (Some(c), false) => format!(": the row stays, column `{c}` set true"),
                (None, _) => ": the row is deleted".to_string(),
            };
            let _ = writeln!(o, "  on_deleted: {}{deleted}", od.as_str());
            let _ = writeln!(o, "  key:        field `{}` → column `{}`", d.key_column, d.key_field);
        }
        None => {
            let _ = writeln!(
                o,
                "  mode:       {} (on_removed: {})",
                d.mode.as_str(),
                d.on_removed.as_str()
            );
            let _ = writeln!(o, "  key:        column `{}` → field `{}`", d.key_column, d.key_field);
        }
    }
    match d.api {
        Some(api) => {
            let _ = writeln!(
                o,
                "  batches:    {} records per request, api: {}",
                d.batch_size,
                api.as_str()
            );
        }
        None if d.kind.is_warehouse() => {
            let _ = writeln!(o, "  batches:    {} rows per write", d.batch_size);
        }
        None => {
            let _ = writeln!(o, "  batches:    {} records per request", d.batch_size);
        }
    }
    let _ = writeln!(o, "mappings:");
    let values: Vec<String> = plan.mappings.iter().map(|m| value_text(&m.value)).collect();
    let vw = values.iter().map(|v| v.chars().count()).max().unwrap_or(0);
    let dw = plan
        .mappings
        .iter()
        .map(|m| m.destination.chars().count())
        .max()
        .unwrap_or(0);
    for (m, v) in plan.mappings.iter().zip(&values) {
        let mut line = format!("  {v:<vw$}  → {:<dw$}", m.destination);
        if !m.transforms.is_empty() {
            let t: Vec<String> = m.transforms.iter().map(ToString::to_string).collect();
            let _ = write!(line, "  | {}", t.join(" | "));
        }
        if let ValueSource::Path(p) = &m.value {
            if p.is_nested() {
                let _ = write!(line, "  ({p})");
            }
        }
        let _ = writeln!(o, "{}", line.trim_end());
    }
    match &plan.schedule {
        Some(sch) => {
            let _ = writeln!(o, "schedule:     {}  ({})", sch.written, sch.tz.name());
            let next: Vec<String> = sch
                .upcoming(now, 3)
                .iter()
                .map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string())
                .collect();
            let _ = writeln!(o, "  next runs:  {}", next.join(", "));
        }
        None => {
            let _ = writeln!(o, "schedule:     none (runs on demand: `ebb run {}`)", plan.name);
        }
    }
    let g = &plan.guard;
    if g.is_set() {
        let _ = writeln!(o, "guard:        {}", g.describe().join(", "));
    }
    let _ = writeln!(
        o,
        "health:       WARNING past {} of lag, CRITICAL past {}",
        humantime_short(plan.health.warning),
        humantime_short(plan.health.critical)
    );
    if let Some(c) = &plan.conflicts {
        let _ = writeln!(
            o,
            "conflicts:    {} on {}{}",
            c.policy.as_str(),
            c.fields.join(", "),
            if c.fields_defaulted {
                " (every mapped field)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            o,
            "  times:      warehouse `{}`, CRM `{}`",
            c.source_modified.as_deref().unwrap_or("-"),
            c.destination_modified
        );
        let _ = match &c.crm_state {
            Some(s) => writeln!(o, "  CRM values: table {} of `{}` (no API calls)", s.table, s.model),
            None => writeln!(
                o,
                "  CRM values: one SOQL query per 200 keys, for the rows about to be written"
            ),
        };
    }
    o
}

/// The cursor, the window and the read API of a CRM source.
fn explain_read(o: &mut String, r: &InboundRead, hubspot: bool) {
    match &r.cursor {
        Some(c) if r.cursor_defaulted => {
            let _ = writeln!(
                o,
                "  cursor:     {c} (for LastModifiedDate: indexed, moves on system updates too, never earlier)"
            );
        }
        Some(c) => {
            let _ = writeln!(o, "  cursor:     {c}");
        }
        None => {
            let _ = writeln!(
                o,
                "  cursor:     none (`incremental: off`): every run reads every record"
            );
        }
    }
    if let Some(c) = &r.cursor {
        let _ = writeln!(
            o,
            "  window:     {c} >= watermark - {} (lookback) and < run start - {} (settle); the first run reads everything",
            duration_text(r.lookback),
            duration_text(r.settle)
        );
    }
    if hubspot {
        let _ = writeln!(
            o,
            "  read api:   search (200 a page, keyset on hs_object_id past 10,000) for a window; list (100 a page) for everything; list `archived=true` for archived records"
        );
        return;
    }
    let rule = match r.api {
        ReadApi::Auto => format!(
            "auto: REST query below {} records, Bulk API 2.0 query jobs at or above",
            r.bulk_threshold
        ),
        ReadApi::Rest => "rest: REST query (queryAll)".to_string(),
        ReadApi::Bulk => "bulk: Bulk API 2.0 query jobs (queryAll)".to_string(),
    };
    let _ = writeln!(o, "  read api:   {rule}");
}

/// `600s` as `10m`: the largest unit that divides it.
pub fn duration_text(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".to_string(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn value_text(v: &ValueSource) -> String {
    match v {
        ValueSource::Path(FieldPath::Simple { column, steps }) if steps.is_empty() => column.clone(),
        ValueSource::Path(FieldPath::Simple { column, steps }) => {
            let mut s = column.clone();
            for st in steps {
                match st {
                    crate::path::Segment::Key(k) => {
                        s.push('.');
                        s.push_str(k);
                    }
                    crate::path::Segment::Index(i) => {
                        let _ = write!(s, "[{i}]");
                    }
                }
            }
            s
        }
        ValueSource::Path(FieldPath::Query { text, .. }) => text.clone(),
        ValueSource::Constant(c) => format!("{c} (constant)"),
    }
}

/// The plan as JSON.
pub fn explain_json(plan: &SyncPlan, now: DateTime<Utc>) -> serde_json::Value {
    let s = &plan.source;
    let d = &plan.destination;
    serde_json::json!({
        "name": plan.name,
        "description": plan.description,
        "direction": plan.direction().as_str(),
        "file": plan.file.display().to_string(),
        "source": {
            "connection": s.connection,
            "type": s.kind.as_str(),
            "query": s.query,
            "columns": s.columns,
            "object": s.object,
            "fields": if s.fields.is_empty() { None } else { Some(&s.fields) },
            "incremental": s.incremental,
            "added_fields": s.read.as_ref().map(|_| &s.added_fields),
            "read": s.read.as_ref().map(|r| serde_json::json!({
                "cursor": r.cursor,
                "cursor_defaulted": r.cursor_defaulted,
                "lookback_secs": r.lookback.as_secs(),
                "settle_secs": r.settle.as_secs(),
                "api": r.api.as_str(),
                "bulk_threshold": r.bulk_threshold,
            })),
            "webhook": s.webhook.as_ref().map(|w| serde_json::json!({
                "endpoint": format!("/webhooks/{}", plan.name),
                "events": w.rules.events.iter().map(|(t, a)| (t.clone(), a.as_str())).collect::<std::collections::BTreeMap<_, _>>(),
                "event_type": w.rules.event_type.iter().map(|p| &p.text).collect::<Vec<_>>(),
                "event_id": w.rules.event_id.as_ref().map(|p| &p.text),
                "event_time": w.rules.event_time.as_ref().map(|p| &p.text),
                "record": w.rules.record.text,
                "fields": w.fields.iter().map(|(f, t)| serde_json::json!({"name": f, "type": t.as_str()})).collect::<Vec<_>>(),
            })),
        },
        "destination": {
            "connection": d.connection,
            "type": d.kind.as_str(),
            "object": d.object,
            "table": d.table,
            "mode": d.mode.as_str(),
            "on_removed": d.on_removed.as_str(),
            "key_column": d.key_column,
            "key_field": d.key_field,
            "api": d.api.map(|a| a.as_str()),
            "batch_size": d.batch_size,
            "on_deleted": d.on_deleted.map(|o| o.as_str()),
            "deleted_column": d.deleted_column,
            "deleted_column_added": d.deleted_column.as_ref().map(|_| d.deleted_column_added),
            "version_column": d.version_column,
        },
        "mappings": plan.mappings.iter().map(|m| serde_json::json!({
            "destination": m.destination,
            "source": match &m.value { ValueSource::Path(_) => Some(value_text(&m.value)), ValueSource::Constant(_) => None },
            "constant": match &m.value { ValueSource::Constant(c) => Some(c.clone()), ValueSource::Path(_) => None },
            "transforms": m.transforms.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "schedule": plan.schedule.as_ref().map(|sch| serde_json::json!({
            "written": sch.written,
            "timezone": sch.tz.name(),
            "next": sch.upcoming(now, 3).iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
        })),
        "guard": {
            "max_change_ratio": plan.guard.max_change_ratio,
            "max_deletes": plan.guard.max_deletes,
            "max_delete_ratio": plan.guard.max_delete_ratio,
            "defaults": plan.guard.default_max_deletes.then_some("max_deletes").into_iter()
                .chain(plan.guard.default_max_delete_ratio.then_some("max_delete_ratio"))
                .collect::<Vec<_>>(),
        },
        "health": {
            "warning_secs": plan.health.warning.as_secs(),
            "critical_secs": plan.health.critical.as_secs(),
        },
        "conflicts": plan.conflicts.as_ref().map(|c| serde_json::json!({
            "policy": c.policy.as_str(),
            "fields": c.fields,
            "source_modified": c.source_modified,
            "destination_modified": c.destination_modified,
            "crm_state": c.crm_state.as_ref().map(|s| serde_json::json!({
                "model": s.model, "table": s.table, "key_column": s.key_column,
            })),
        })),
    })
}

/// `90m` → `1h30m`, `45s` → `45s`.
fn humantime_short(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}
