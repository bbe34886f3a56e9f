//! Encoding a batch: each row's key and payload written straight from the Arrow columns
//! into two text arenas and hashed, with no allocation per row on the common paths.
//!
//! This is the hot path of a run. Each column is resolved to its concrete array type once
//! per batch, field names are written from pre-encoded text, and a plain column (an
//! integer, float, boolean, text or microsecond timestamp with no transform) is written as
//! JSON without going through [`Val`]. Everything else (nested paths, JSONPath, other
//! types, transforms other than ASCII `lower`) takes the general path, which yields the
//! same bytes: a test checks the two against each other.
//!
//! The hashes ([`key_hash`], [`payload_hash`]) are defined here, where rows are encoded;
//! the run's tables and the state store keep what they return.

use super::error::{RowCause, ValueError};
use super::value::{self, Val};
use super::{FieldMap, RowError, RowMapper, Src};
use crate::source::{DECIMAL_TEXT, JSON_TEXT};
use crate::transform::Transform;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, LargeStringArray, StringArray, StringViewArray};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use std::ops::Range;

/// The 128-bit hash of a row's key text.
pub fn key_hash(key: &str) -> u128 {
    match xxhash_rust::xxh3::xxh3_128(key.as_bytes()) {
        0 => 1, // 0 marks an empty slot in the engine's tables
        h => h,
    }
}

/// The 128-bit hash of a payload, as stored in the snapshot.
pub fn payload_hash(payload: &[u8]) -> [u8; 16] {
    xxhash_rust::xxh3::xxh3_128(payload).to_le_bytes()
}

/// One row, encoded. Ranges are into [`Encoded::keys`] and [`Encoded::payloads`].
#[derive(Debug)]
pub enum Row {
    /// The key is null or unreadable.
    NoKey(RowError),
    Row {
        key: Range<u32>,
        kh: u128,
        /// The payload and its hash, or why the row cannot be sent.
        payload: Result<(Range<u32>, [u8; 16]), RowError>,
    },
}

/// The rows of a batch, encoded; reusable across batches.
#[derive(Debug, Default)]
pub struct Encoded {
    pub keys: String,
    pub payloads: String,
    pub rows: Vec<Row>,
}

impl Encoded {
    pub fn clear(&mut self) {
        self.keys.clear();
        self.payloads.clear();
        self.rows.clear();
    }

    pub fn key(&self, r: &Range<u32>) -> &str {
        &self.keys[r.start as usize..r.end as usize]
    }

    pub fn payload(&self, r: &Range<u32>) -> &str {
        &self.payloads[r.start as usize..r.end as usize]
    }
}

/// A column resolved to its array type.
enum Col<'a> {
    Int64(&'a arrow::array::PrimitiveArray<Int64Type>),
    Int32(&'a arrow::array::PrimitiveArray<Int32Type>),
    Float64(&'a arrow::array::PrimitiveArray<Float64Type>),
    Bool(&'a BooleanArray),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Micros(&'a arrow::array::PrimitiveArray<TimestampMicrosecondType>, bool),
    Other(&'a ArrayRef, &'a arrow::datatypes::Field),
}

impl<'a> Col<'a> {
    fn new(array: &'a ArrayRef, field: &'a arrow::datatypes::Field) -> Col<'a> {
        let marked = field.metadata().contains_key(DECIMAL_TEXT) || field.metadata().contains_key(JSON_TEXT);
        match array.data_type() {
            DataType::Int64 => Col::Int64(array.as_primitive()),
            DataType::Int32 => Col::Int32(array.as_primitive()),
            DataType::Float64 => Col::Float64(array.as_primitive()),
            DataType::Boolean => Col::Bool(array.as_boolean()),
            DataType::Utf8 if !marked => Col::Utf8(array.as_string()),
            DataType::LargeUtf8 if !marked => Col::LargeUtf8(array.as_string()),
            DataType::Utf8View if !marked => Col::Utf8View(array.as_string_view()),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => Col::Micros(array.as_primitive(), tz.is_some()),
            _ => Col::Other(array, field),
        }
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            Col::Int64(a) => a.is_null(row),
            Col::Int32(a) => a.is_null(row),
            Col::Float64(a) => a.is_null(row),
            Col::Bool(a) => a.is_null(row),
            Col::Utf8(a) => a.is_null(row),
            Col::LargeUtf8(a) => a.is_null(row),
            Col::Utf8View(a) => a.is_null(row),
            Col::Micros(a, _) => a.is_null(row),
            Col::Other(a, _) => a.is_null(row),
        }
    }

    /// The text of a text column's cell (not null).
    fn text(&self, row: usize) -> Option<&'a str> {
        match self {
            Col::Utf8(a) => Some(a.value(row)),
            Col::LargeUtf8(a) => Some(a.value(row)),
            Col::Utf8View(a) => Some(a.value(row)),
            _ => None,
        }
    }

    /// The cell as a value (as [`value::read`] reads it).
    fn val(&self, row: usize) -> Result<Val, ValueError> {
        if self.is_null(row) {
            return Ok(Val::Null);
        }
        Ok(match self {
            Col::Int64(a) => Val::Int(a.value(row)),
            Col::Int32(a) => Val::Int(a.value(row).into()),
            Col::Float64(a) => Val::Float(a.value(row)),
            Col::Bool(a) => Val::Bool(a.value(row)),
            Col::Utf8(_) | Col::LargeUtf8(_) | Col::Utf8View(_) => Val::Str(self.text(row).unwrap_or("").to_string()),
            Col::Micros(a, utc) => Val::Timestamp {
                at: micros(a.value(row))?,
                utc: *utc,
            },
            Col::Other(a, f) => return value::read(a, f, row),
        })
    }

    /// Writes the cell as JSON.
    fn write_json(&self, row: usize, out: &mut String) -> Result<(), ValueError> {
        if self.is_null(row) {
            out.push_str("null");
            return Ok(());
        }
        match self {
            Col::Int64(a) => out.push_str(itoa::Buffer::new().format(a.value(row))),
            Col::Int32(a) => out.push_str(itoa::Buffer::new().format(a.value(row))),
            Col::Float64(a) => value::write_float(a.value(row), out)?,
            Col::Bool(a) => out.push_str(if a.value(row) { "true" } else { "false" }),
            Col::Utf8(_) | Col::LargeUtf8(_) | Col::Utf8View(_) => {
                value::write_json_string(self.text(row).unwrap_or(""), out)
            }
            Col::Micros(a, utc) => {
                out.push('"');
                value::push_timestamp(&micros(a.value(row))?, *utc, out);
                out.push('"');
            }
            Col::Other(a, f) => value::read(a, f, row)?.write_json(out)?,
        }
        Ok(())
    }

    /// Appends the cell's text (a key): `Ok(false)` when it is null.
    fn write_text(&self, row: usize, out: &mut String) -> Result<bool, ValueError> {
        if self.is_null(row) {
            return Ok(false);
        }
        match self {
            Col::Int64(a) => out.push_str(itoa::Buffer::new().format(a.value(row))),
            Col::Int32(a) => out.push_str(itoa::Buffer::new().format(a.value(row))),
            Col::Utf8(_) | Col::LargeUtf8(_) | Col::Utf8View(_) => out.push_str(self.text(row).unwrap_or("")),
            _ => match self.val(row)?.into_text() {
                Some(t) => out.push_str(&t),
                None => return Ok(false),
            },
        }
        Ok(true)
    }
}

fn micros(v: i64) -> Result<chrono::NaiveDateTime, ValueError> {
    chrono::DateTime::from_timestamp_micros(v)
        .map(|d| d.naive_utc())
        .ok_or(ValueError::TimestampOutOfRange)
}

/// How one mapping is written for this batch.
enum Writer<'a> {
    /// A plain column, no transform.
    Direct(Col<'a>),
    /// A text column lowered (ASCII text is lowered in place; other text takes the general path).
    Lower(Col<'a>, &'a FieldMap),
    /// A column through its transforms.
    Transformed(Col<'a>, &'a FieldMap),
    /// A constant, transforms applied: its JSON, or why it cannot be sent.
    Constant(&'a Result<String, RowError>),
    /// Anything else: [`RowMapper::field_value`].
    General(&'a FieldMap),
}

/// Encodes the rows of one batch.
pub struct BatchEncoder<'a> {
    mapper: &'a RowMapper,
    batch: &'a RecordBatch,
    key: Col<'a>,
    writers: Vec<Writer<'a>>,
    scratch: String,
}

impl RowMapper {
    /// An encoder for `batch` (whose schema is the one this mapper was bound to).
    pub fn encoder<'a>(&'a self, batch: &'a RecordBatch) -> BatchEncoder<'a> {
        let col = |i: usize| Col::new(batch.column(i), self.schema.field(i));
        let writers = self
            .fields
            .iter()
            .enumerate()
            .map(|(n, f)| match &f.source {
                Src::Column { index, steps } if steps.is_empty() => {
                    let c = col(*index);
                    match (f.transforms.as_slice(), &c) {
                        ([], Col::Other(..)) => Writer::General(f),
                        ([], _) => Writer::Direct(c),
                        ([Transform::Lower], Col::Utf8(_) | Col::LargeUtf8(_) | Col::Utf8View(_)) => {
                            Writer::Lower(c, f)
                        }
                        (_, Col::Other(..)) => Writer::General(f),
                        _ => Writer::Transformed(c, f),
                    }
                }
                Src::Constant(_) => match self.constants.get(n).and_then(|c| c.as_ref()) {
                    Some(c) => Writer::Constant(c),
                    None => Writer::General(f),
                },
                _ => Writer::General(f),
            })
            .collect();
        BatchEncoder {
            mapper: self,
            batch,
            key: col(self.key_index),
            writers,
            scratch: String::new(),
        }
    }
}

impl BatchEncoder<'_> {
    /// Encodes rows `rows` of the batch, appending to `out`.
    pub fn encode(&mut self, rows: Range<usize>, out: &mut Encoded) {
        out.rows.reserve(rows.len());
        for row in rows {
            let r = self.encode_row(row, out);
            out.rows.push(r);
        }
    }

    fn encode_row(&mut self, row: usize, out: &mut Encoded) -> Row {
        let m = self.mapper;
        let start = out.keys.len();
        match self.key.write_text(row, &mut out.keys) {
            Ok(true) => {}
            Ok(false) => {
                out.keys.truncate(start);
                return Row::NoKey(
                    RowCause::NullKey {
                        column: m.key_column.clone(),
                    }
                    .into(),
                );
            }
            Err(cause) => {
                out.keys.truncate(start);
                return Row::NoKey(
                    RowCause::Column {
                        column: m.key_column.clone(),
                        cause,
                    }
                    .into(),
                );
            }
        }
        let key = &out.keys[start..];
        let kh = key_hash(key);
        let pstart = out.payloads.len();
        let written = if m.delete_only {
            let p = &mut out.payloads;
            p.push('{');
            p.push_str(&m.names_json[m.fields.len()]);
            value::write_json_string(key, p);
            p.push('}');
            Ok(())
        } else {
            self.write_payload(row, key, &mut out.payloads)
        };
        let key = start as u32..out.keys.len() as u32;
        let payload = match written {
            Ok(()) => {
                let h = payload_hash(&out.payloads.as_bytes()[pstart..]);
                Ok((pstart as u32..out.payloads.len() as u32, h))
            }
            Err(_) => {
                // Rare: the general path says which error comes first (in mapping order).
                out.payloads.truncate(pstart);
                let key_text = &out.keys[start..];
                let mut fields = Vec::with_capacity(m.fields.len());
                let general = m.map_row_into(self.batch, row, &mut fields).and_then(|()| {
                    RowMapper::write_object(&fields, &m.order, Some((m.key_field(), key_text)), &mut out.payloads)
                });
                match general {
                    Ok(()) => Ok((
                        pstart as u32..out.payloads.len() as u32,
                        payload_hash(&out.payloads.as_bytes()[pstart..]),
                    )),
                    Err(e) => {
                        out.payloads.truncate(pstart);
                        Err(e)
                    }
                }
            }
        };
        Row::Row { key, kh, payload }
    }

    fn write_payload(&mut self, row: usize, key: &str, out: &mut String) -> Result<(), RowError> {
        let m = self.mapper;
        out.push('{');
        for (n, &i) in m.order.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(&m.names_json[i]);
            let Some(w) = self.writers.get(i) else {
                value::write_json_string(key, out); // the destination key, not mapped
                continue;
            };
            let f = &m.fields[i];
            let bad = |cause: ValueError| -> RowError {
                RowCause::Field {
                    field: f.destination.clone(),
                    cause,
                }
                .into()
            };
            match w {
                Writer::Direct(c) => c.write_json(row, out).map_err(|cause| match c {
                    Col::Micros(..) => RowCause::Column {
                        column: self.column_name(f).to_string(),
                        cause,
                    }
                    .into(),
                    _ => bad(cause),
                })?,
                Writer::Lower(c, f) => match c.text(row).filter(|t| !c.is_null(row) && t.is_ascii()) {
                    Some(t) => {
                        self.scratch.clear();
                        self.scratch.push_str(t);
                        self.scratch.make_ascii_lowercase();
                        value::write_json_string(&self.scratch, out);
                    }
                    None => transformed(c.val(row), f, self.column_name(f))?
                        .write_json(out)
                        .map_err(bad)?,
                },
                Writer::Transformed(c, f) => transformed(c.val(row), f, self.column_name(f))?
                    .write_json(out)
                    .map_err(bad)?,
                Writer::Constant(c) => match c {
                    Ok(json) => out.push_str(json),
                    Err(e) => return Err(e.clone()),
                },
                Writer::General(f) => m.field_value(f, self.batch, row)?.write_json(out).map_err(bad)?,
            }
        }
        out.push('}');
        Ok(())
    }

    fn column_name(&self, f: &FieldMap) -> &str {
        match &f.source {
            Src::Column { index, .. } => self.mapper.schema.field(*index).name(),
            _ => "",
        }
    }
}

/// A cell through a mapping's transforms, with the general path's errors.
fn transformed(cell: Result<Val, ValueError>, f: &FieldMap, column: &str) -> Result<Val, RowError> {
    f.transform(cell.map_err(|cause| RowCause::Column {
        column: column.to_string(),
        cause,
    })?)
}
