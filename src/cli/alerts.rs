//! `ebb alerts` (every alert, per model it watches: firing or not, the figure now, since
//! when, what could not be delivered) and `ebb alerts test [NAME]` (a test notification
//! through each channel). docs/alerts.md.

use super::history::one_model;
use super::run::shown;
use super::PlanFormat;
use crate::alerts::channel::Kind;
use crate::alerts::eval::{message, notify, Alert, AlertState};
use crate::alerts::figures::figures;
use crate::http::retry::RetryPolicy;
use std::io::Write;
use std::path::PathBuf;

fn ms_text(ms: i64) -> String {
    crate::state::conflicts::ms_text(ms)
}

/// `ebb alerts`.
pub fn show(project: Option<PathBuf>, format: PlanFormat) -> anyhow::Result<u8> {
    let (report, store, rt) = match one_model(project, "")? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let Some(spec) = report.project.as_ref() else {
        eprintln!("error: ebb.yaml is not valid (`ebb validate` says why)");
        return Ok(2);
    };
    let alerts = Alert::compile(spec);
    let mut out = std::io::stdout().lock();
    if alerts.is_empty() {
        writeln!(out, "ebb.yaml defines no alerts (`alerts:`)")?;
        return Ok(0);
    }
    let now = chrono::Utc::now();
    let mut lines = Vec::new();
    for p in &report.plans {
        let watched: Vec<&Alert> = alerts.iter().filter(|a| a.watches(&p.name)).collect();
        if watched.is_empty() {
            continue;
        }
        let got = rt.block_on(async {
            let f = figures(&store, p, now).await?;
            let mut states = Vec::new();
            for a in &watched {
                let s: Option<AlertState> = store
                    .alert_state(&a.spec.name, &p.name)
                    .await?
                    .and_then(|t| serde_json::from_str(&t).ok());
                states.push(s);
            }
            Ok::<_, crate::state::StateError>((f, states))
        });
        let (f, states) = match got {
            Ok(x) => x,
            Err(e) => {
                eprintln!("error: {}", shown(&report.secrets, &e.to_string()));
                return Ok(1);
            }
        };
        for (a, s) in watched.iter().zip(states) {
            let value = f.get(&a.condition.first().metric).copied();
            let holds = a.condition.holds(|m| f.get(&m).copied());
            lines.push(serde_json::json!({
                "alert": a.spec.name,
                "model": p.name,
                "severity": a.severity.as_str(),
                "condition": a.spec.condition,
                "value": value,
                "holds_now": holds,
                "state": match &s { Some(s) if s.firing => "firing", Some(_) => "ok", None => "not evaluated" },
                "since": s.as_ref().filter(|s| s.since_ms > 0).map(|s| ms_text(s.since_ms)),
                "notified": s.as_ref().and_then(|s| s.notified_ms).map(ms_text),
                "undelivered": s.as_ref().map(|s| s.undelivered.clone()).unwrap_or_default(),
            }));
        }
    }
    if format == PlanFormat::Json {
        super::json_lines(&mut out, &lines)?;
        return Ok(0);
    }
    let header = super::header(&[
        "alert",
        "model",
        "severity",
        "state",
        "value now",
        "condition",
        "since",
        "undelivered",
    ]);
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let s = super::cell;
            vec![
                s(&l["alert"]),
                s(&l["model"]),
                s(&l["severity"]),
                s(&l["state"]),
                l["value"].as_f64().map_or_else(|| "-".into(), |v| format!("{v:.2}")),
                s(&l["condition"]),
                s(&l["since"]),
                l["undelivered"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("; "))
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out.write_all(super::text_table(&header, &rows, Some(80)).as_bytes())?;
    Ok(0)
}

/// `ebb alerts test [NAME]`: a test notification through every channel of the alert (or of
/// every alert). Exit 1 when one could not be delivered.
pub fn test(project: Option<PathBuf>, name: Option<&str>) -> anyhow::Result<u8> {
    let dir = super::project_dir(project)?;
    let report = crate::validate::validate(&dir, &[])?;
    let Some(spec) = report.project.as_ref() else {
        eprintln!("error: ebb.yaml is not valid (`ebb validate` says why)");
        return Ok(2);
    };
    let alerts: Vec<Alert> = Alert::compile(spec)
        .into_iter()
        .filter(|a| name.is_none_or(|n| a.spec.name == n))
        .collect();
    if alerts.is_empty() {
        match name {
            Some(n) => eprintln!("error: ebb.yaml has no alert named `{n}`"),
            None => eprintln!("error: ebb.yaml defines no alerts (`alerts:`)"),
        }
        return Ok(2);
    }
    let rt = super::run::runtime()?;
    let http = crate::http::client()?;
    let n = spec.notifications.clone().unwrap_or_default();
    let policy = RetryPolicy::from_env();
    let now = chrono::Utc::now();
    let mut failed = false;
    for a in &alerts {
        let msg = message(spec, a, "(test)", Kind::Test, None, now, now);
        let sent = rt.block_on(notify(&http, &dir, &n, a, msg, &policy));
        for (target, error) in sent.results {
            match error {
                None => println!("{}: test sent to {target}", a.spec.name),
                Some(e) => {
                    failed = true;
                    println!("{}: {target} FAILED: {}", a.spec.name, shown(&report.secrets, &e));
                }
            }
        }
    }
    Ok(u8::from(failed))
}
