//! The `schedule:` block: an interval or a cron expression, and its time zone.

use super::Compiler;
use crate::config::model::ModelSpec;
use crate::diagnostics::{Code, Diagnostic};
use crate::schedule::{self, Schedule, ScheduleKind};

impl Compiler<'_, '_> {
    pub(super) fn schedule(&mut self, spec: &ModelSpec) -> Option<Schedule> {
        let s = spec.schedule.as_ref()?;
        let ctx = self.ctx;
        let tz = match &s.timezone {
            None => chrono_tz::UTC,
            Some(name) => match schedule::parse_timezone(name) {
                Ok(tz) => tz,
                Err(e) => {
                    self.push(
                        Diagnostic::new(Code::BadTimezone, ctx.at(&["schedule", "timezone"]), e.message).help(e.help),
                    );
                    return None;
                }
            },
        };
        let kind = match (&s.interval, &s.cron) {
            (Some(_), Some(_)) => {
                self.push(
                    Diagnostic::new(
                        Code::ScheduleShape,
                        ctx.key(&["schedule", "cron"]),
                        "a schedule has both `interval` and `cron`",
                    )
                    .help("keep one of them"),
                );
                return None;
            }
            (None, None) => {
                self.push(
                    Diagnostic::new(
                        Code::ScheduleShape,
                        ctx.key(&["schedule"]),
                        "a schedule needs `interval` or `cron`",
                    )
                    .help("e.g. `interval: hourly` or `cron: \"0 6 * * *\"`"),
                );
                return None;
            }
            (Some(i), None) => match schedule::parse_interval(i) {
                Ok(k) => {
                    if let ScheduleKind::Every { secs } = k {
                        if secs < 60 {
                            self.push(
                                Diagnostic::new(
                                    Code::ShortInterval,
                                    ctx.at(&["schedule", "interval"]),
                                    format!("interval `{i}` runs the model more than once a minute"),
                                )
                                .help("each run reads the whole model; a minute or more is usual"),
                            );
                        }
                    }
                    k
                }
                Err(e) => {
                    self.push(
                        Diagnostic::new(Code::BadInterval, ctx.at(&["schedule", "interval"]), e.message).help(e.help),
                    );
                    return None;
                }
            },
            (None, Some(c)) => match schedule::parse_cron(c) {
                Ok(k) => k,
                Err(e) => {
                    self.push(Diagnostic::new(Code::BadCron, ctx.at(&["schedule", "cron"]), e.message).help(e.help));
                    return None;
                }
            },
        };
        let written = s.interval.clone().or_else(|| s.cron.clone()).unwrap_or_default();
        Some(Schedule { kind, tz, written })
    }
}
