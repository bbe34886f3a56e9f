//! SOQL text → a parsed query ([`Select`]): the tokenizer and the parser of the simple form
//! the sandbox serves (module [`super::soql`] says which). Literals are typed here as SOQL
//! types them: unquoted datetimes and dates, quoted strings, numbers, `true`/`false`,
//! `null`. Whether a literal fits its field is decided later, against the describe.
//!
//! Datetime literals: the SOQL guide documents `YYYY-MM-DDThh:mm:ss` followed by `Z`,
//! `+hh:mm` or `-hh:mm` [D] (`sforce_api_calls_soql_select_dateformats`); orgs also accept
//! fractional seconds (`…:53.299852-06:00` runs, [3P] Illuminated Cloud issue 2283), so the
//! sandbox does too. A literal that starts like a date but is not one of these forms (no
//! zone, a month 13, `T9:30`) is `MALFORMED_QUERY`, never a string.

use super::value::parse_date;
use chrono::{DateTime, NaiveDate, Utc};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token {
    Word(String),
    Str(String),
    Sym(&'static str),
}

pub(crate) fn tokenize(q: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = q.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string literal".into()),
                    Some('\\') => {
                        let escaped = chars.get(i + 1).ok_or("unterminated string literal")?;
                        s.push(match escaped {
                            'n' => '\n',
                            't' => '\t',
                            other => *other,
                        });
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        s.push(*c);
                        i += 1;
                    }
                }
            }
            out.push(Token::Str(s));
        } else if let Some(sym) = ["!=", "<>", "<=", ">=", "=", "<", ">", ",", "(", ")"]
            .into_iter()
            .find(|s| chars[i..].iter().take(s.len()).collect::<String>() == *s)
        {
            out.push(Token::Sym(sym));
            i += sym.len();
        } else if c.is_alphanumeric() || c == '_' || c == '-' || c == '+' || c == '.' {
            let start = i;
            // A datetime literal carries `:` and `+`/`-` offsets; a name carries `.` and `_`.
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | ':' | '-' | '+')) {
                if i > start && matches!(chars[i], '-' | '+') && !chars[start].is_ascii_digit() && chars[start] != '-' {
                    break;
                }
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect()));
        } else {
            return Err(format!("unexpected character: '{c}'"));
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub(crate) enum Literal {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

#[derive(Debug)]
pub(crate) enum Cond {
    Cmp(String, &'static str, Literal),
    In(String, bool, Vec<Literal>),
    Like(String, Literal),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

/// A parsed query.
pub(crate) struct Select {
    pub count: bool,
    pub fields: Vec<String>,
    pub object: String,
    pub filter: Option<Cond>,
    /// `(field, descending, nulls last)`.
    pub order: Vec<(String, bool, bool)>,
    pub limit: Option<usize>,
    /// `OFFSET n`, when the query has one.
    pub offset: Option<usize>,
}

/// Parses a query.
pub(crate) fn parse(q: &str) -> Result<Select, String> {
    Parser {
        tokens: tokenize(q)?,
        pos: 0,
    }
    .select()
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn eat_word(&mut self, w: &str) -> bool {
        let yes = self.peek_word(w);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect_word(&mut self, w: &str) -> Result<(), String> {
        if self.eat_word(w) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        let yes = matches!(self.tokens.get(self.pos), Some(Token::Sym(x)) if *x == s);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn unexpected(&self) -> String {
        match self.tokens.get(self.pos) {
            Some(Token::Word(w)) => format!("unexpected token: '{w}'"),
            Some(Token::Str(s)) => format!("unexpected token: ''{s}''"),
            Some(Token::Sym(s)) => format!("unexpected token: '{s}'"),
            None => "unexpected end of query".into(),
        }
    }

    fn name(&mut self) -> Result<String, String> {
        match self.tokens.get(self.pos) {
            Some(Token::Word(w)) if w.chars().next().is_some_and(|c| c.is_alphabetic()) => {
                self.pos += 1;
                Ok(w.clone())
            }
            _ => Err(self.unexpected()),
        }
    }

    fn number(&mut self) -> Result<usize, String> {
        match self.tokens.get(self.pos) {
            Some(Token::Word(w)) => {
                let n = w.parse().map_err(|_| self.unexpected())?;
                self.pos += 1;
                Ok(n)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn select(&mut self) -> Result<Select, String> {
        self.expect_word("SELECT")?;
        let mut count = false;
        let mut fields = Vec::new();
        if self.peek_word("COUNT") && self.tokens.get(self.pos + 1) == Some(&Token::Sym("(")) {
            self.pos += 2;
            if !self.eat_sym(")") {
                return Err("the sandbox supports COUNT() only, without a field".into());
            }
            count = true;
        } else {
            loop {
                fields.push(self.name()?);
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        self.expect_word("FROM")?;
        let object = self.name()?;
        let filter = if self.eat_word("WHERE") { Some(self.or()?) } else { None };
        let mut order = Vec::new();
        if self.eat_word("ORDER") {
            self.expect_word("BY")?;
            loop {
                let f = self.name()?;
                let desc = if self.eat_word("DESC") {
                    true
                } else {
                    self.eat_word("ASC");
                    false
                };
                let nulls_last = if self.eat_word("NULLS") {
                    if self.eat_word("LAST") {
                        true
                    } else {
                        self.expect_word("FIRST")?;
                        false
                    }
                } else {
                    desc
                };
                order.push((f, desc, nulls_last));
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        let limit = if self.eat_word("LIMIT") {
            Some(self.number()?)
        } else {
            None
        };
        let offset = if self.eat_word("OFFSET") {
            Some(self.number()?)
        } else {
            None
        };
        if self.pos < self.tokens.len() {
            return Err(self.unexpected());
        }
        Ok(Select {
            count,
            fields,
            object,
            filter,
            order,
            limit,
            offset,
        })
    }

    fn or(&mut self) -> Result<Cond, String> {
        let mut left = self.and()?;
        while self.eat_word("OR") {
            left = Cond::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Cond, String> {
        let mut left = self.unary()?;
        while self.eat_word("AND") {
            left = Cond::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Cond, String> {
        if self.eat_word("NOT") {
            return Ok(Cond::Not(Box::new(self.unary()?)));
        }
        if self.eat_sym("(") {
            let c = self.or()?;
            if !self.eat_sym(")") {
                return Err(self.unexpected());
            }
            return Ok(c);
        }
        let field = self.name()?;
        let negated = self.eat_word("NOT");
        if self.eat_word("IN") {
            if !self.eat_sym("(") {
                return Err(self.unexpected());
            }
            let mut list = Vec::new();
            loop {
                list.push(self.literal()?);
                if !self.eat_sym(",") {
                    break;
                }
            }
            if !self.eat_sym(")") {
                return Err(self.unexpected());
            }
            return Ok(Cond::In(field, negated, list));
        }
        if negated {
            return Err(self.unexpected());
        }
        if self.eat_word("LIKE") {
            return Ok(Cond::Like(field, self.literal()?));
        }
        let op = match self.tokens.get(self.pos) {
            Some(Token::Sym(s)) if ["=", "!=", "<>", "<", "<=", ">", ">="].contains(s) => *s,
            _ => return Err(self.unexpected()),
        };
        self.pos += 1;
        Ok(Cond::Cmp(field, if op == "<>" { "!=" } else { op }, self.literal()?))
    }

    fn literal(&mut self) -> Result<Literal, String> {
        let lit = match self.tokens.get(self.pos) {
            Some(Token::Str(s)) => Literal::Str(s.clone()),
            Some(Token::Word(w)) => {
                if w.eq_ignore_ascii_case("null") {
                    Literal::Null
                } else if w.eq_ignore_ascii_case("true") || w.eq_ignore_ascii_case("false") {
                    Literal::Bool(w.eq_ignore_ascii_case("true"))
                } else if let Some(d) = datetime_literal(w) {
                    Literal::DateTime(d)
                } else if let Some(d) = parse_date(w) {
                    Literal::Date(d)
                } else if looks_like_date(w) {
                    return Err(format!(
                        "invalid date or datetime literal '{w}': SOQL writes a date YYYY-MM-DD and a datetime \
                         YYYY-MM-DDThh:mm:ss[.fff] followed by Z, +hh:mm or -hh:mm, unquoted"
                    ));
                } else if let Ok(n) = w.parse::<f64>() {
                    Literal::Num(n)
                } else {
                    return Err(self.unexpected());
                }
            }
            _ => return Err(self.unexpected()),
        };
        self.pos += 1;
        Ok(lit)
    }
}

/// `2024-01-31`… : a word that starts as a date does (four digits and a dash).
fn looks_like_date(w: &str) -> bool {
    let b = w.as_bytes();
    b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

/// A SOQL datetime literal: `YYYY-MM-DDThh:mm:ss`, optional fractional seconds, then `Z`,
/// `+hh:mm` or `-hh:mm` (module documentation).
pub(crate) fn datetime_literal(w: &str) -> Option<DateTime<Utc>> {
    let b = w.as_bytes();
    let shape = b.len() >= 20
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[..4].iter().chain(&b[5..7]).chain(&b[8..10]).all(u8::is_ascii_digit)
        && b[11..13]
            .iter()
            .chain(&b[14..16])
            .chain(&b[17..19])
            .all(u8::is_ascii_digit);
    if !shape {
        return None;
    }
    let mut rest = &w[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let zone_ok = rest == "Z"
        || (rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':'
            && rest[1..3].bytes().chain(rest[4..].bytes()).all(|c| c.is_ascii_digit()));
    if !zone_ok {
        return None;
    }
    DateTime::parse_from_rfc3339(w).ok().map(|d| d.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t =
            tokenize("SELECT Id FROM Contact WHERE LastModifiedDate > 2024-01-31T09:30:00.000+00:00 AND x != 'a\\'b'")
                .unwrap();
        assert_eq!(t[5], Token::Word("LastModifiedDate".into()));
        assert_eq!(t[6], Token::Sym(">"));
        assert_eq!(t[7], Token::Word("2024-01-31T09:30:00.000+00:00".into()));
        assert_eq!(t[10], Token::Sym("!="));
        assert_eq!(t[11], Token::Str("a'b".into()));
        let t = tokenize("LIMIT -5, Upsell_Score__c>=0.5").unwrap();
        assert_eq!(t[1], Token::Word("-5".into()));
        assert_eq!(t[3], Token::Word("Upsell_Score__c".into()));
        assert_eq!(t[4], Token::Sym(">="));
    }

    #[test]
    fn datetime_literals_are_the_documented_forms() {
        let at = |s: &str| datetime_literal(s).map(|d| d.to_rfc3339());
        assert_eq!(at("2024-01-31T09:30:00Z").as_deref(), Some("2024-01-31T09:30:00+00:00"));
        assert_eq!(
            at("2024-01-31T10:30:00+01:00").as_deref(),
            Some("2024-01-31T09:30:00+00:00")
        );
        assert_eq!(
            at("2024-01-31T01:30:00-08:00").as_deref(),
            Some("2024-01-31T09:30:00+00:00")
        );
        assert_eq!(
            at("2024-01-31T09:30:00.250Z").as_deref(),
            Some("2024-01-31T09:30:00.250+00:00")
        );
        for bad in [
            "2024-01-31T09:30:00",
            "2024-01-31T09:30:00+0000",
            "2024-01-31T9:30:00Z",
            "2024-13-31T09:30:00Z",
            "2024-01-31T09:30:00.Z",
            "2024-01-31 09:30:00Z",
        ] {
            assert_eq!(at(bad), None, "{bad}");
            let q = format!("SELECT Id FROM Contact WHERE SystemModstamp > {bad}");
            let e = parse(&q).err().unwrap_or_default();
            assert!(
                e.contains("invalid date or datetime literal") || e.contains("unexpected"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn parses_the_simple_form() {
        let s = parse("select Id, Email from Contact where (Email = null or not Phone in ('1')) order by LastModifiedDate desc nulls first, Id limit 10 offset 2").unwrap();
        assert_eq!(s.fields, ["Id", "Email"]);
        assert_eq!(
            s.order,
            vec![
                ("LastModifiedDate".to_string(), true, false),
                ("Id".to_string(), false, false)
            ]
        );
        assert_eq!((s.limit, s.offset), (Some(10), Some(2)));
        for bad in [
            "SELECT FROM Contact",
            "SELECT Id FROM",
            "SELECT Id FROM Contact WHERE",
            "SELECT Id FROM Contact LIMIT x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
