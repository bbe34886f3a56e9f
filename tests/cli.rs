//! The `ebb` binary as a user runs it: exit codes, the three output formats, `plan` and
//! `schema`.

use crate::support::{ebb, fixtures, repo, stderr, stdout};
use std::path::Path;

const MULTI: &str = "tests/fixtures/invalid/multi_misspelt_key_bad_cron_bad_transform.yaml";

fn temp_project(models: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures().join("project/ebb.yaml"), dir.path().join("ebb.yaml")).unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    for (name, text) in models {
        std::fs::write(dir.path().join("models").join(name), text).unwrap();
    }
    dir
}

const SHORT_INTERVAL: &str = "models:
  - name: chatty
    source:
      type: duckdb
      query: SELECT id, email FROM customers
    destination:
      type: file
      unique_identifier: id
    mappings:
      - source: email
        destination: email
    schedule:
      interval: 30s
";

#[test]
fn the_example_project_validates_with_exit_0() {
    let o = ebb(&repo(), &["validate"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("ok: "), "{}", stdout(&o));
}

#[test]
fn a_project_is_found_from_a_subdirectory() {
    let o = ebb(&repo().join("models"), &["validate"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn three_problems_in_one_file_come_back_in_one_run_each_at_its_line_with_help() {
    let o = ebb(&repo(), &["-C", "tests/fixtures/project", "validate", MULTI]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    for (code, at) in [("E101", ":9:5"), ("E405", ":15:20"), ("E602", ":17:13")] {
        let block = out
            .split("\n\n")
            .find(|b| b.contains(&format!("[{code}]")))
            .unwrap_or_else(|| panic!("no {code} in:\n{out}"));
        assert!(
            block.contains(&format!("--> {MULTI}{at}")),
            "{code} not at {at}:\n{block}"
        );
        assert!(block.contains("= help: "), "{code} has no help line:\n{block}");
    }
    assert!(out.contains("did you mean `destination`?"), "{out}");
    // The source line and a caret under the offending node.
    assert!(out.contains("9 |     destinaton:\n  |     ^^^^^^^^^^"), "{out}");
    assert!(out.contains("failed: 3 errors"), "{out}");
}

/// GitHub's workflow-command syntax: `::error file=F,line=L,col=C[,endLine=..,endColumn=..][,title=T]::message`,
/// with `%`, CR and LF escaped in the message and also `:` and `,` in property values.
fn is_github_annotation(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("::") else {
        return false;
    };
    let Some((cmd, rest)) = rest.split_once(' ') else {
        return false;
    };
    if !["error", "warning", "notice"].contains(&cmd) {
        return false;
    }
    let Some((props, message)) = rest.split_once("::") else {
        return false;
    };
    if message.is_empty() || message.contains('\n') || message.contains('\r') {
        return false;
    }
    let mut seen = Vec::new();
    for prop in props.split(',') {
        let Some((k, v)) = prop.split_once('=') else {
            return false;
        };
        if v.contains(':') || v.is_empty() {
            return false;
        }
        match k {
            "line" | "col" | "endLine" | "endColumn" => {
                if v.parse::<u32>().map(|n| n == 0).unwrap_or(true) {
                    return false;
                }
            }
            "file" | "title" => {}
            _ => return false,
        }
        seen.push(k);
    }
    seen.starts_with(&["file", "line", "col"])
}

#[test]
fn github_format_prints_valid_workflow_annotations() {
    let o = ebb(
        &repo(),
        &["-C", "tests/fixtures/project", "validate", "--format", "github", MULTI],
    );
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for l in &lines {
        assert!(is_github_annotation(l), "not a GitHub annotation: {l}");
        assert!(l.contains(&format!("file={MULTI},")), "{l}");
        assert!(l.contains("%0Ahelp: "), "help travels in the message: {l}");
    }
    assert!(lines[0].starts_with("::error file="));
    assert!(lines
        .iter()
        .any(|l| l.contains(",line=9,col=5,endLine=9,endColumn=15,title=ebb E101::unknown key `destinaton`")));
    // The summary goes to stderr so that stdout holds only annotations.
    assert!(stderr(&o).contains("3 errors"));
}

#[test]
fn github_format_escapes_property_and_message_text() {
    let d = ebb::diagnostics::Diagnostic::new(
        ebb::diagnostics::Code::BadCron,
        ebb::diagnostics::Span {
            file: ebb::diagnostics::SourceFile::new("dir,x/a:b.yaml", "x".into()),
            line: 1,
            col: 1,
            end_line: 1,
            end_col: 2,
        },
        "100% wrong\nsecond line",
    );
    let line = ebb::diagnostics::render::github(&d);
    assert_eq!(
        line,
        "::error file=dir%2Cx/a%3Ab.yaml,line=1,col=1,endLine=1,endColumn=2,title=ebb E602::100%25 wrong%0Asecond line\n"
    );
    assert!(is_github_annotation(line.trim_end()));
}

#[test]
fn json_format_lists_every_diagnostic() {
    let o = ebb(
        &repo(),
        &["-C", "tests/fixtures/project", "validate", "--format", "json", MULTI],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("valid JSON");
    let codes: Vec<&str> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["E101", "E405", "E602"]);
    let first = &v["diagnostics"][0];
    assert_eq!((first["line"].as_u64(), first["column"].as_u64()), (Some(9), Some(5)));
    assert_eq!(first["severity"], "error");
    assert_eq!(first["help"], "did you mean `destination`?");
    assert_eq!(v["summary"]["errors"], 3);
}

#[test]
fn warnings_fail_only_with_deny_warnings() {
    let dir = temp_project(&[("chatty.yaml", SHORT_INTERVAL)]);
    let o = ebb(dir.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("warning[W605]"));
    let o = ebb(dir.path(), &["validate", "--deny-warnings"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
}

#[test]
fn no_project_is_a_usage_error_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = ebb(dir.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no `ebb.yaml`"), "{}", stderr(&o));
}

#[test]
fn a_missing_path_or_a_bad_flag_exits_2() {
    let o = ebb(&repo(), &["validate", "models/nope.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("models/nope.yaml` does not exist"),
        "{}",
        stderr(&o)
    );
    let o = ebb(&repo(), &["validate", "--format", "xml"]);
    assert_eq!(o.status.code(), Some(2));
}

#[cfg(unix)]
#[test]
fn an_unreadable_model_file_exits_2_and_says_which() {
    let dir = temp_project(&[]);
    std::os::unix::fs::symlink("/nonexistent/target.yaml", dir.path().join("models/broken.yaml")).unwrap();
    let o = ebb(dir.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("error[E001]: cannot read `models/broken.yaml`"), "{out}");
}

#[test]
fn a_broken_model_does_not_hide_the_others() {
    let good = SHORT_INTERVAL.replace("chatty", "good").replace("30s", "hourly");
    let bad = "models:\n  - name: bad\n    source: [\n";
    let dir = temp_project(&[("a_bad.yaml", bad), ("b_good.yaml", &good)]);
    let o = ebb(dir.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("error[E002]"), "{}", stdout(&o));
    let o = ebb(dir.path(), &["plan", "good"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn plan_prints_the_compiled_model() {
    let o = ebb(&repo(), &["plan", "customer_segments"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "model customer_segments  (models/customer_segments.yaml)",
        "source:       connection `warehouse` (duckdb)",
        "FROM presentation.customer_analytics",
        "destination:  connection `salesforce` (salesforce) → Contact",
        "mode:       update (on_removed: ignore)",
        "key:        column `crm_id` → field `Id`",
        "200 records per request, api: auto",
        "| round(2)",
        "(column `propensity_scores` → key `upsell`)",
        "schedule:     hourly  (UTC)",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let next = out.lines().find(|l| l.contains("next runs:")).unwrap();
    assert_eq!(next.matches(":00:00 UTC").count(), 3, "{next}");
}

#[test]
fn plan_json_has_three_upcoming_runs_in_the_model_timezone() {
    let o = ebb(&repo(), &["plan", "churn_risk", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let plan = &v[0];
    assert_eq!(plan["destination"]["key_field"], "Id");
    assert_eq!(
        plan["mappings"][0]["transforms"],
        serde_json::json!(["scale(0, 1, 0, 100)", "round(1)"])
    );
    let next: Vec<&str> = plan["schedule"]["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(next.len(), 3);
    for t in next {
        let dt = chrono::DateTime::parse_from_rfc3339(t).unwrap();
        assert_eq!(dt.format("%H:%M").to_string(), "06:00", "{t}");
        assert!(t.ends_with("+01:00") || t.ends_with("+02:00"), "not Berlin time: {t}");
        use chrono::Datelike;
        assert!(dt.weekday().num_days_from_monday() < 5, "{t} is a weekend day");
    }
}

#[test]
fn plan_of_an_unknown_model_suggests_a_name() {
    let o = ebb(&repo(), &["plan", "customer_segment"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("did you mean `customer_segments`?"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn plan_of_an_invalid_model_shows_its_errors_and_exits_1() {
    let dir = temp_project(&[("chatty.yaml", &SHORT_INTERVAL.replace("30s", "every hour"))]);
    let o = ebb(dir.path(), &["plan", "chatty"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("error[E601]"), "{}", stderr(&o));
}

#[test]
fn schema_check_and_print() {
    let o = ebb(&repo(), &["schema", "--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = ebb(&repo(), &["schema"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
    let dir = temp_project(&[]);
    let o = ebb(dir.path(), &["schema", "--check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("ebb schema --write"));
    let o = ebb(dir.path(), &["schema", "--write"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(Path::new(&dir.path().join("schemas/model.schema.json")).is_file());
    let o = ebb(dir.path(), &["schema", "--check"]);
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn a_project_without_models_is_a_warning() {
    let dir = temp_project(&[]);
    let o = ebb(dir.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("warning[W801]: no model files in `models`"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn human_output_is_coloured_only_when_asked_or_on_a_terminal() {
    let args = ["-C", "tests/fixtures/project", "validate", MULTI];
    let plain = stdout(&ebb(&repo(), &args));
    assert!(!plain.contains('\x1b'), "piped output must be plain");
    let mut coloured = vec!["--color", "always"];
    coloured.extend(args);
    let out = stdout(&ebb(&repo(), &coloured));
    assert!(out.contains("\x1b[1;31merror[E101]\x1b[0m"), "{out:?}");
}

#[test]
fn a_rejected_rows_message_is_stored_and_shown_without_credentials() {
    let f = crate::sync::Fixture::new("rowsecret", 1, 10, None);
    f.sink.answer_next(
        200,
        r#"{"results": [{"success": false, "code": "DENIED", "error": "denied: see https://crm.example/why?token=abc123 (password=hunter2)"}]}"#,
    );
    let (code, run) = f.run(&[]);
    assert_eq!(code, 3, "{run}");
    let db = rusqlite::Connection::open(f.path().join(".ebb/state.db")).unwrap();
    let stored: String = db
        .query_row("SELECT message FROM ebb_row_errors", [], |r| r.get(0))
        .unwrap();
    let shown = stdout(&ebb(f.path(), &["errors", "contacts"]));
    let json = stdout(&ebb(f.path(), &["errors", "contacts", "--format", "json"]));
    for (what, text) in [
        ("ebb_row_errors", &stored),
        ("ebb errors", &shown),
        ("--format json", &json),
    ] {
        assert!(
            text.contains("denied: see https://crm.example/why?token=***"),
            "{what}: {text}"
        );
        assert!(!text.contains("abc123") && !text.contains("hunter2"), "{what}: {text}");
    }
}
