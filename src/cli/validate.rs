//! `ebb validate`.

use crate::diagnostics::render::{self, Format};
use crate::diagnostics::{Severity, Tally};
use std::io::Write;
use std::path::PathBuf;

pub fn run(
    project: Option<PathBuf>,
    paths: &[PathBuf],
    format: Format,
    deny_warnings: bool,
    connect: bool,
    color: bool,
) -> anyhow::Result<u8> {
    // A directory argument holding its own ebb.yaml is a project, not a folder of models.
    let (project, paths): (Option<PathBuf>, Vec<PathBuf>) = match (project, paths) {
        (None, [one]) if one.is_dir() && one.join(crate::config::PROJECT_FILE).is_file() => {
            (Some(one.clone()), Vec::new())
        }
        (p, rest) => (p, rest.to_vec()),
    };
    for p in &paths {
        if !p.exists() {
            anyhow::bail!("`{}` does not exist", p.display());
        }
    }
    let dir = super::project_dir(project)?;
    let mut report = crate::validate::validate(&dir, &paths)?;
    if connect {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(crate::validate::connect::check(&mut report));
        // Errors of the live systems may quote what the variables expanded to.
        report.scrub_diagnostics();
    }
    let tally = Tally::of(&report.diagnostics);
    let mut out = std::io::stdout().lock();
    let text = render::render(&report.diagnostics, format, color);
    out.write_all(text.as_bytes())?;
    let reported_files = if paths.is_empty() { report.files } else { paths.len() };
    let models = report.models.len();
    match format {
        Format::Human => out.write_all(render::summary(tally, models, reported_files, color).as_bytes())?,
        Format::Github => eprint!("{}", render::summary(tally, models, reported_files, false)),
        Format::Json => {}
    }
    let failed =
        tally.errors > 0 || (deny_warnings && report.diagnostics.iter().any(|d| d.severity == Severity::Warning));
    Ok(if report.io_error {
        2
    } else if failed {
        1
    } else {
        0
    })
}
