//! Alert conditions: `METRIC OP NUMBER`, joined with `and` / `or` (`and` binds tighter),
//! over a documented vocabulary of a model's health figures ([`Metric`]).

/// A figure of a model's health an alert can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Minutes since the newest change the destination has confirmed (outbound: the last
    /// successful run's end; inbound: the newest CRM stamp loaded; webhook: the oldest
    /// pending event's age).
    LagMinutes,
    /// The share of the last 20 finished runs that failed.
    FailureRate,
    /// Rows the destination rejected in the last run.
    RejectedRows,
    /// Rejected over sent in the last run.
    RejectedRatio,
    /// Failed runs in a row, up to the last one.
    ConsecutiveFailures,
    /// The relative change of rows read between the last two successful runs
    /// (`-0.5`: half as many).
    RowCountChange,
    /// Conflicts held for review (models with `conflicts`).
    ConflictsOpen,
    /// Dead letters in the inbox (webhook models).
    DeadLetters,
}

impl Metric {
    pub const ALL: [Metric; 8] = [
        Metric::LagMinutes,
        Metric::FailureRate,
        Metric::RejectedRows,
        Metric::RejectedRatio,
        Metric::ConsecutiveFailures,
        Metric::RowCountChange,
        Metric::ConflictsOpen,
        Metric::DeadLetters,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::LagMinutes => "lag_minutes",
            Metric::FailureRate => "failure_rate",
            Metric::RejectedRows => "rejected_rows",
            Metric::RejectedRatio => "rejected_ratio",
            Metric::ConsecutiveFailures => "consecutive_failures",
            Metric::RowCountChange => "row_count_change",
            Metric::ConflictsOpen => "conflicts_open",
            Metric::DeadLetters => "dead_letters",
        }
    }

    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// One comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    pub metric: Metric,
    pub op: Op,
    pub threshold: f64,
}

/// A parsed condition: a disjunction of conjunctions of comparisons.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub any: Vec<Vec<Test>>,
}

/// Why a condition does not parse: the message, the byte offset in the text it is about,
/// and for an unknown metric the word (for "did you mean").
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionError {
    pub message: String,
    pub offset: usize,
    pub unknown_metric: Option<String>,
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, ConditionError> {
        let words = split(text);
        let err = |offset: usize, message: String| ConditionError {
            message,
            offset,
            unknown_metric: None,
        };
        let mut any = vec![Vec::new()];
        let mut i = 0;
        if words.is_empty() {
            return Err(err(0, "the condition is empty".into()));
        }
        loop {
            let Some(&(at, metric)) = words.get(i) else {
                return Err(err(text.len(), "a metric is missing after `and`/`or`".into()));
            };
            let Some(m) = Metric::parse(metric) else {
                return Err(ConditionError {
                    message: format!("`{metric}` is not a metric"),
                    offset: at,
                    unknown_metric: Some(metric.to_string()),
                });
            };
            let Some(&(op_at, op)) = words.get(i + 1) else {
                return Err(err(
                    text.len(),
                    format!("`{metric}` needs a comparison, e.g. `{metric} > 60`"),
                ));
            };
            let op = match op {
                ">" => Op::Gt,
                ">=" => Op::Ge,
                "<" => Op::Lt,
                "<=" => Op::Le,
                "==" | "=" => Op::Eq,
                "!=" => Op::Ne,
                other => {
                    return Err(err(
                        op_at,
                        format!("`{other}` is not a comparison (>, >=, <, <=, ==, !=)"),
                    ))
                }
            };
            let Some(&(n_at, n)) = words.get(i + 2) else {
                return Err(err(text.len(), "a number is missing after the comparison".into()));
            };
            let threshold: f64 = match n.parse() {
                Ok(v) if f64::is_finite(v) => v,
                _ => return Err(err(n_at, format!("`{n}` is not a number"))),
            };
            any.last_mut().expect("one group at least").push(Test {
                metric: m,
                op,
                threshold,
            });
            i += 3;
            match words.get(i) {
                None => break,
                Some(&(_, w)) if w.eq_ignore_ascii_case("and") => {}
                Some(&(_, w)) if w.eq_ignore_ascii_case("or") => any.push(Vec::new()),
                Some(&(at, w)) => {
                    return Err(err(
                        at,
                        format!("`{w}` cannot follow a comparison; join with `and` or `or`"),
                    ))
                }
            }
            i += 1;
        }
        Ok(Condition { any })
    }

    /// The metrics it reads.
    pub fn metrics(&self) -> Vec<Metric> {
        let mut out: Vec<Metric> = self.any.iter().flatten().map(|t| t.metric).collect();
        out.dedup();
        out
    }

    /// Whether it holds for `value` of each metric; a metric without a value (a model it
    /// does not apply to) makes its comparison false.
    pub fn holds(&self, value: impl Fn(Metric) -> Option<f64>) -> bool {
        self.any.iter().any(|all| {
            all.iter()
                .all(|t| value(t.metric).is_some_and(|v| t.op.holds(v, t.threshold)))
        })
    }

    /// The first comparison: the figure a notification quotes.
    pub fn first(&self) -> &Test {
        &self.any[0][0]
    }
}

/// Words and operators with their byte offsets (`lag_minutes>60` splits too).
fn split(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if matches!(c, b'>' | b'<' | b'=' | b'!') {
            i += 1;
            if i < b.len() && b[i] == b'=' {
                i += 1;
            }
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'>' | b'<' | b'=' | b'!') {
                i += 1;
            }
        }
        out.push((start, &text[start..i]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_conditions_parse_and_hold() {
        let c = Condition::parse("lag_minutes > 60").unwrap();
        assert!(c.holds(|_| Some(61.0)));
        assert!(!c.holds(|_| Some(60.0)));
        assert!(!c.holds(|_| None), "no value: false");
        let c = Condition::parse("failure_rate>0.05").unwrap();
        assert_eq!(c.first().metric, Metric::FailureRate);
        assert!(c.holds(|_| Some(0.1)));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let c = Condition::parse("rejected_rows > 10 and rejected_ratio >= 0.5 or dead_letters > 0").unwrap();
        assert_eq!(c.any.len(), 2);
        let v = |r: f64, q: f64, d: f64| {
            move |m: Metric| {
                Some(match m {
                    Metric::RejectedRows => r,
                    Metric::RejectedRatio => q,
                    _ => d,
                })
            }
        };
        assert!(c.holds(v(11.0, 0.5, 0.0)));
        assert!(!c.holds(v(11.0, 0.4, 0.0)));
        assert!(c.holds(v(0.0, 0.0, 1.0)));
    }

    #[test]
    fn errors_say_where() {
        let e = Condition::parse("lag_minute > 60").unwrap_err();
        assert_eq!((e.offset, e.unknown_metric.as_deref()), (0, Some("lag_minute")));
        let e = Condition::parse("lag_minutes >> 60").unwrap_err();
        assert_eq!(e.offset, 13);
        let e = Condition::parse("lag_minutes > soon").unwrap_err();
        assert_eq!(e.offset, 14);
        assert!(Condition::parse("lag_minutes > 60 and").is_err());
        assert!(Condition::parse("lag_minutes > 60 60").is_err());
        assert!(Condition::parse("").is_err());
    }
}
