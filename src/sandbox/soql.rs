//! SOQL, the simple form an incremental extract uses: `SELECT f1, f2 FROM Obj [WHERE …]
//! [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], …] [LIMIT n] [OFFSET n]`, and
//! `SELECT COUNT() FROM …`. Conditions compare a field with a literal (`=`, `!=`, `<>`,
//! `<`, `<=`, `>`, `>=`, `LIKE`, `IN (…)`, `NOT IN (…)`), joined by `AND`/`OR`/`NOT` with
//! parentheses. Literals are typed like SOQL's: datetimes (`2024-01-31T09:30:00Z`) and
//! dates unquoted, strings quoted, numbers, `true`/`false`, `null`; a literal of the wrong
//! type for its field is refused as Salesforce refuses it (`INVALID_FIELD`), so a client
//! that quotes a datetime finds out here. String comparisons ignore case, as in SOQL.
//!
//! Results come in pages (`done`, `nextRecordsUrl`, `totalSize`), each record with its
//! `attributes`; the page size is the configured one, or the `batchSize` of a
//! `Sforce-Query-Options` header (200-2,000).
//!
//! `queryAll` (v29+) is the same query over the records in the recycle bin too (not those
//! a Bulk `hardDelete` removed, which skip the bin): those show
//! `IsDeleted = true` and their deletion time as `SystemModstamp`. Its `nextRecordsUrl`
//! continues under `query/`, which the REST guide says carries on a `queryAll` result;
//! `queryAll/{locator}` is served as well.

use super::api::{error, Shr};
use super::schema::{Field, FieldType, SObject};
use super::value::{parse_date, parse_datetime};
use super::State;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Map, Value};
use std::cmp::Ordering;

/// The rows of a query not yet fetched.
pub(crate) struct Cursor {
    rows: Vec<Value>,
    page: usize,
    version: String,
}

/// At most this many open cursors; the oldest are dropped (as locators expire).
const MAX_CURSORS: usize = 1_000;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Sym(&'static str),
}

fn tokenize(q: &str) -> Result<Vec<Token>, String> {
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
enum Literal {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

#[derive(Debug)]
enum Cond {
    Cmp(String, &'static str, Literal),
    In(String, bool, Vec<Literal>),
    Like(String, Literal),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

/// A parsed query.
struct Select {
    count: bool,
    fields: Vec<String>,
    object: String,
    filter: Option<Cond>,
    order: Vec<(String, bool, bool)>,
    limit: Option<usize>,
    offset: usize,
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
        let offset = if self.eat_word("OFFSET") { self.number()? } else { 0 };
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
                } else if let Some(d) = parse_datetime(w) {
                    Literal::DateTime(d)
                } else if let Some(d) = parse_date(w) {
                    Literal::Date(d)
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

/// A comparable value of a record's field.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Cmp {
    Bool(bool),
    Num(f64),
    Str(String),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

fn cmp_of(field: &Field, v: &Value) -> Option<Cmp> {
    match field.kind {
        FieldType::Boolean => v.as_bool().map(Cmp::Bool),
        t if t.is_number() => v.as_f64().map(Cmp::Num),
        FieldType::Date => v.as_str().and_then(parse_date).map(Cmp::Date),
        FieldType::Datetime => v.as_str().and_then(parse_datetime).map(Cmp::DateTime),
        _ => v.as_str().map(|s| Cmp::Str(s.to_lowercase())),
    }
}

/// The literal as a comparable value of `field`'s type, or the error Salesforce gives.
fn literal_for(field: &Field, lit: &Literal) -> Result<Option<Cmp>, String> {
    let wrong = |ty: &str, quoted: bool| {
        Err(format!(
            "value of filter criterion for field '{}' must be of type {ty} and {} be enclosed in quotes",
            field.name,
            if quoted { "should" } else { "should not" }
        ))
    };
    match (field.kind, lit) {
        (_, Literal::Null) => Ok(None),
        (FieldType::Boolean, Literal::Bool(b)) => Ok(Some(Cmp::Bool(*b))),
        (FieldType::Boolean, _) => wrong("boolean", false),
        (t, Literal::Num(n)) if t.is_number() => Ok(Some(Cmp::Num(*n))),
        (t, _) if t.is_number() => wrong("double", false),
        (FieldType::Date, Literal::Date(d)) => Ok(Some(Cmp::Date(*d))),
        (FieldType::Date, _) => wrong("date", false),
        (FieldType::Datetime, Literal::DateTime(d)) => Ok(Some(Cmp::DateTime(*d))),
        (FieldType::Datetime, _) => wrong("dateTime", false),
        (_, Literal::Str(s)) => Ok(Some(Cmp::Str(s.to_lowercase()))),
        (_, _) => wrong("string", true),
    }
}

/// A compiled condition: fields resolved, literals typed.
enum Check {
    Cmp(String, &'static str, Option<Cmp>),
    In(String, bool, Vec<Option<Cmp>>),
    Like(String, Vec<char>),
    And(Box<Check>, Box<Check>),
    Or(Box<Check>, Box<Check>),
    Not(Box<Check>),
}

fn field_of<'a>(object: &'a SObject, name: &str) -> Result<&'a Field, String> {
    object.field(name).ok_or_else(|| {
        format!(
            "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append \
             the '__c' after the custom field name. Please reference your WSDL or the describe call for the \
             appropriate names.",
            object.name
        )
    })
}

fn compile(object: &SObject, c: &Cond) -> Result<Check, String> {
    Ok(match c {
        Cond::Cmp(f, op, lit) => {
            let field = field_of(object, f)?;
            Check::Cmp(field.name.clone(), op, literal_for(field, lit)?)
        }
        Cond::In(f, negated, list) => {
            let field = field_of(object, f)?;
            let values = list.iter().map(|l| literal_for(field, l)).collect::<Result<_, _>>()?;
            Check::In(field.name.clone(), *negated, values)
        }
        Cond::Like(f, lit) => {
            let field = field_of(object, f)?;
            let text = field.kind.is_text() || matches!(field.kind, FieldType::Id | FieldType::Reference);
            match lit {
                Literal::Str(p) if text => Check::Like(field.name.clone(), p.to_lowercase().chars().collect()),
                _ => {
                    return Err(format!(
                        "invalid operator on field '{}': LIKE needs a text field and a quoted pattern",
                        field.name
                    ))
                }
            }
        }
        Cond::And(a, b) => Check::And(Box::new(compile(object, a)?), Box::new(compile(object, b)?)),
        Cond::Or(a, b) => Check::Or(Box::new(compile(object, a)?), Box::new(compile(object, b)?)),
        Cond::Not(a) => Check::Not(Box::new(compile(object, a)?)),
    })
}

fn eval(check: &Check, object: &SObject, row: &Map<String, Value>) -> bool {
    let value = |name: &str| {
        let field = object.field(name)?;
        cmp_of(field, row.get(&field.name)?)
    };
    match check {
        Check::Cmp(f, op, lit) => {
            let v = value(f);
            match (op, &v, lit) {
                (&"=", _, _) => v == *lit,
                (&"!=", _, _) => v != *lit,
                (_, Some(v), Some(l)) => match v.partial_cmp(l) {
                    Some(o) => match *op {
                        "<" => o == Ordering::Less,
                        "<=" => o != Ordering::Greater,
                        ">" => o == Ordering::Greater,
                        _ => o != Ordering::Less,
                    },
                    None => false,
                },
                _ => false,
            }
        }
        Check::In(f, negated, list) => list.contains(&value(f)) != *negated,
        Check::Like(f, pattern) => match value(f) {
            Some(Cmp::Str(s)) => like(&s.chars().collect::<Vec<_>>(), pattern),
            _ => false,
        },
        Check::And(a, b) => eval(a, object, row) && eval(b, object, row),
        Check::Or(a, b) => eval(a, object, row) || eval(b, object, row),
        Check::Not(a) => !eval(a, object, row),
    }
}

/// SOQL `LIKE`: `%` any run of characters, `_` one character (both already lower case).
fn like(text: &[char], pattern: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('%', rest)) => (0..=text.len()).any(|i| like(&text[i..], rest)),
        Some((p, rest)) => text
            .split_first()
            .is_some_and(|(c, tail)| (*p == '_' || p == c) && like(tail, rest)),
    }
}

/// Runs a query: every matching row (LIMIT and OFFSET applied), or the count.
#[allow(clippy::result_large_err)] // the error is the response to send, built once per request
fn run(state: &State, q: &str, version: &str, include_deleted: bool) -> Result<(usize, Vec<Value>), Response> {
    let malformed = |m: String| error(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", &m);
    let tokens = tokenize(q).map_err(malformed)?;
    let select = Parser { tokens, pos: 0 }.select().map_err(malformed)?;
    let Some(t) = state.store.table(&select.object) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "INVALID_TYPE",
            &format!(
                "sObject type '{}' is not supported. If you are attempting to use a custom object, be sure to append \
                 the '__c' after the entity name. Please reference your WSDL or the describe call for the \
                 appropriate names.",
                select.object
            ),
        ));
    };
    let table = &state.store.tables[t];
    let object = &table.object;
    let invalid_field = |m: String| error(StatusCode::BAD_REQUEST, "INVALID_FIELD", &m);
    let fields: Vec<String> = select
        .fields
        .iter()
        .map(|f| field_of(object, f).map(|f| f.name.clone()))
        .collect::<Result<_, _>>()
        .map_err(invalid_field)?;
    let check = select
        .filter
        .as_ref()
        .map(|c| compile(object, c))
        .transpose()
        .map_err(invalid_field)?;
    let order: Vec<(String, bool, bool)> = select
        .order
        .iter()
        .map(|(f, d, n)| field_of(object, f).map(|f| (f.name.clone(), *d, *n)))
        .collect::<Result<_, _>>()
        .map_err(invalid_field)?;
    let live = table
        .records
        .iter()
        .map(|(id, r)| (id.clone(), super::store::Store::render_row(table, id, r, true, false)));
    let binned = table
        .deleted
        .iter()
        .filter(|(id, _)| include_deleted && !table.purged.contains(*id))
        .map(|(id, r)| (id.clone(), super::store::Store::render_row(table, id, r, true, true)));
    let mut rows: Vec<(String, Map<String, Value>)> = live
        .chain(binned)
        .filter(|(_, row)| check.as_ref().is_none_or(|c| eval(c, object, row)))
        .collect();
    if include_deleted {
        // Ids grow: creation order, the order of a query without ORDER BY.
        rows.sort_by(|(a, _), (b, _)| a.cmp(b));
    }
    if !order.is_empty() {
        rows.sort_by(|(_, a), (_, b)| {
            for (name, desc, nulls_last) in &order {
                let field = object.field(name);
                let get = |r: &Map<String, Value>| field.and_then(|f| cmp_of(f, r.get(&f.name)?));
                let o = match (get(a), get(b)) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => {
                        if *nulls_last {
                            Ordering::Greater
                        } else {
                            Ordering::Less
                        }
                    }
                    (Some(_), None) => {
                        if *nulls_last {
                            Ordering::Less
                        } else {
                            Ordering::Greater
                        }
                    }
                    (Some(x), Some(y)) => {
                        let o = x.partial_cmp(&y).unwrap_or(Ordering::Equal);
                        if *desc {
                            o.reverse()
                        } else {
                            o
                        }
                    }
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
    }
    let rows = rows
        .into_iter()
        .skip(select.offset)
        .take(select.limit.unwrap_or(usize::MAX));
    if select.count {
        return Ok((rows.count(), Vec::new()));
    }
    let out: Vec<Value> = rows
        .map(|(id, row)| {
            let mut r = Map::new();
            r.insert(
                "attributes".into(),
                json!({"type": object.name, "url": format!("/services/data/v{version}/sobjects/{}/{id}", object.name)}),
            );
            for f in &fields {
                r.insert(f.clone(), row.get(f).cloned().unwrap_or(Value::Null));
            }
            Value::Object(r)
        })
        .collect();
    Ok((out.len(), out))
}

#[derive(serde::Deserialize)]
pub(crate) struct QueryParams {
    q: Option<String>,
}

fn page_size(state_default: usize, headers: &HeaderMap) -> usize {
    headers
        .get("sforce-query-options")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split(',').find_map(|p| p.trim().strip_prefix("batchSize=")))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .map(|n| n.clamp(200, 2_000))
        .unwrap_or(state_default)
}

/// `GET query?q=…`.
pub(crate) async fn query(shared: Shr, v: Path<String>, params: Query<QueryParams>, headers: HeaderMap) -> Response {
    respond(shared, v, params, headers, false)
}

/// `GET queryAll?q=…`: deleted records included.
pub(crate) async fn query_all(
    shared: Shr,
    v: Path<String>,
    params: Query<QueryParams>,
    headers: HeaderMap,
) -> Response {
    respond(shared, v, params, headers, true)
}

fn respond(
    axum::extract::State(shared): Shr,
    Path(v): Path<String>,
    Query(params): Query<QueryParams>,
    headers: HeaderMap,
    include_deleted: bool,
) -> Response {
    let Some(q) = params.q.filter(|q| !q.trim().is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "A query string has to be specified",
        );
    };
    let version = v.trim_start_matches('v').to_string();
    let mut state = shared.lock();
    let (total, rows) = match run(&state, &q, &version, include_deleted) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let page = page_size(shared.settings.page_size, &headers);
    if rows.len() <= page {
        return Json(json!({"totalSize": total, "done": true, "records": rows})).into_response();
    }
    let n = state.next_seq();
    let locator = format!("01g5g0000{n:06}");
    let first: Vec<Value> = rows[..page].to_vec();
    if state.cursors.len() >= MAX_CURSORS {
        if let Some(oldest) = state.cursors.keys().min().cloned() {
            state.cursors.remove(&oldest);
        }
    }
    state.cursors.insert(
        locator.clone(),
        Cursor {
            rows,
            page,
            version: version.clone(),
        },
    );
    Json(json!({
        "totalSize": total,
        "done": false,
        "nextRecordsUrl": format!("/services/data/v{version}/query/{locator}-{page}"),
        "records": first,
    }))
    .into_response()
}

/// `GET query/{locator}-{offset}`: the next page.
pub(crate) async fn more(axum::extract::State(shared): Shr, Path((_v, locator)): Path<(String, String)>) -> Response {
    let invalid = || {
        error(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        )
    };
    let Some((id, offset)) = locator.rsplit_once('-') else {
        return invalid();
    };
    let Ok(offset) = offset.parse::<usize>() else {
        return invalid();
    };
    let state = shared.lock();
    let Some(cursor) = state.cursors.get(id) else {
        return invalid();
    };
    if offset >= cursor.rows.len() {
        return invalid();
    }
    let end = (offset + cursor.page).min(cursor.rows.len());
    let mut body = json!({
        "totalSize": cursor.rows.len(),
        "done": end == cursor.rows.len(),
        "records": cursor.rows[offset..end].to_vec(),
    });
    if end < cursor.rows.len() {
        body["nextRecordsUrl"] = Value::from(format!("/services/data/v{}/query/{id}-{end}", cursor.version));
    }
    Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        let m = |t: &str, p: &str| like(&t.chars().collect::<Vec<_>>(), &p.chars().collect::<Vec<_>>());
        assert!(m("acme corp", "acme%"));
        assert!(m("acme corp", "%corp"));
        assert!(m("acme", "a_me"));
        assert!(!m("acme", "a_e"));
        assert!(m("", "%"));
    }

    #[test]
    fn tokens() {
        let t =
            tokenize("SELECT Id FROM Contact WHERE LastModifiedDate > 2024-01-31T09:30:00.000+0000 AND x != 'a\\'b'")
                .unwrap();
        assert_eq!(t[5], Token::Word("LastModifiedDate".into()));
        assert_eq!(t[6], Token::Sym(">"));
        assert_eq!(t[7], Token::Word("2024-01-31T09:30:00.000+0000".into()));
        assert_eq!(t[10], Token::Sym("!="));
        assert_eq!(t[11], Token::Str("a'b".into()));
        let t = tokenize("LIMIT -5, Upsell_Score__c>=0.5").unwrap();
        assert_eq!(t[1], Token::Word("-5".into()));
        assert_eq!(t[3], Token::Word("Upsell_Score__c".into()));
        assert_eq!(t[4], Token::Sym(">="));
    }

    #[test]
    fn parses_the_simple_form() {
        let tokens = tokenize("select Id, Email from Contact where (Email = null or not Phone in ('1')) order by LastModifiedDate desc nulls first, Id limit 10 offset 2").unwrap();
        let s = Parser { tokens, pos: 0 }.select().unwrap();
        assert_eq!(s.fields, ["Id", "Email"]);
        assert_eq!(
            s.order,
            vec![
                ("LastModifiedDate".to_string(), true, false),
                ("Id".to_string(), false, false)
            ]
        );
        assert_eq!((s.limit, s.offset), (Some(10), 2));
        for bad in [
            "SELECT FROM Contact",
            "SELECT Id FROM",
            "SELECT Id FROM Contact WHERE",
            "SELECT Id FROM Contact LIMIT x",
        ] {
            let r = tokenize(bad).and_then(|tokens| Parser { tokens, pos: 0 }.select().map(|_| ()));
            assert!(r.is_err(), "{bad}");
        }
    }
}
