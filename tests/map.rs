//! The mapping layer on Arrow batches: column lookup, dotted paths into JSON text and
//! structs, JSONPath, constants, transforms, and per-row failures.

use arrow::array::{Array, ArrayRef, Decimal128Array, Int64Array, StringArray, StructArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use ebb::map::value::Val;
use ebb::map::RowMapper;
use std::sync::Arc;

/// Compiles one model (file destination, duckdb source) with these mappings.
fn plan(mappings: &str) -> ebb::plan::SyncPlan {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ebb.yaml"),
        "version: 1\nconnections:\n  w:\n    type: duckdb\n    path: w.duckdb\n  out:\n    type: file\n    path: out\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::write(
        dir.path().join("models/m.yaml"),
        format!(
            "models:\n  - name: m\n    source:\n      type: duckdb\n      query: SELECT * FROM t\n    destination:\n      type: file\n      unique_identifier: ID\n    mappings:\n{mappings}"
        ),
    )
    .unwrap();
    let report = ebb::validate::validate(dir.path(), &[]).unwrap();
    assert!(!report.has_errors(), "{:#?}", report.diagnostics);
    report.plans.into_iter().next().unwrap()
}

/// Upper-case column names, as Snowflake reports unquoted identifiers.
fn batch() -> RecordBatch {
    let scores = StructArray::from(vec![(
        Arc::new(Field::new("upsell", DataType::Float64, true)),
        Arc::new(arrow::array::Float64Array::from(vec![Some(0.5), None, Some(0.9)])) as ArrayRef,
    )]);
    let schema = Schema::new(vec![
        Field::new("ID", DataType::Int64, true),
        Field::new("NAME", DataType::Utf8, true),
        Field::new("PROFILE", DataType::Utf8, true),
        Field::new("LTV", DataType::Decimal128(10, 3), true),
        Field::new("SCORES", scores.data_type().clone(), true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(vec![Some(1), Some(2), None])),
            Arc::new(StringArray::from(vec![Some("ada"), Some("ALAN"), Some("x")])),
            Arc::new(StringArray::from(vec![
                Some(r#"{"tier": "gold", "tags": ["a", "b"]}"#),
                Some("not json"),
                None,
            ])),
            Arc::new(
                Decimal128Array::from(vec![Some(1_234_567), Some(-5), None])
                    .with_precision_and_scale(10, 3)
                    .unwrap(),
            ),
            Arc::new(scores),
        ],
    )
    .unwrap()
}

#[test]
fn columns_resolve_ignoring_case_and_values_map_exactly() {
    let p = plan(
        "      - source: id\n        destination: Id\n      - source: name\n        destination: Name\n        transform: initcap\n      - source: ltv\n        destination: LTV\n        transform: round(2)\n      - source: scores.upsell\n        destination: Upsell\n      - source: profile.tier\n        destination: Tier\n      - source: $.profile.tags[1]\n        destination: Tag\n      - constant: 7\n        destination: Seven\n",
    );
    let b = batch();
    let m = RowMapper::new(&p, b.schema()).unwrap();
    assert_eq!(m.key(&b, 0).unwrap(), "1");
    let row = m.map_row(&b, 0).unwrap();
    assert_eq!(
        RowMapper::to_json_object(&row).unwrap(),
        r#"{"Id":1,"Name":"Ada","LTV":1234.57,"Upsell":0.5,"Tier":"gold","Tag":"b","Seven":7}"#
    );
    // Row 2: a path into text that is not JSON fails that row only, with the reason.
    let err = m.map_row(&b, 1).unwrap_err();
    assert_eq!(err.code, "bad_value");
    assert!(
        err.message
            .contains("`PROFILE` for `Tier`: the column holds text that is not JSON"),
        "{}",
        err.message
    );
    // Row 3: a null key.
    assert_eq!(m.key(&b, 2).unwrap_err().code, "null_key");
}

#[test]
fn missing_columns_are_named() {
    let p = plan("      - source: email\n        destination: Email\n      - source: nope.x\n        destination: X\n");
    let b = batch();
    let missing = RowMapper::new(&p, b.schema()).err().unwrap();
    assert_eq!(missing, ["email", "nope"]);
}

#[test]
fn missing_keys_inside_json_are_null() {
    let p = plan("      - source: profile.missing\n        destination: M\n        transform: default('n/a')\n");
    let b = batch();
    let m = RowMapper::new(&p, b.schema()).unwrap();
    assert_eq!(m.map_row(&b, 0).unwrap()[0].1, Val::Str("n/a".into()));
    // A null JSON column gives null too, not an error.
    assert_eq!(m.map_row(&b, 2).unwrap()[0].1, Val::Str("n/a".into()));
}

/// A batch with a column of each type the encoder writes directly, and some it does not,
/// with nulls, escapes, non-ASCII text and values that cannot be sent.
fn wide_batch() -> RecordBatch {
    use arrow::array::{
        BooleanArray, Date32Array, DictionaryArray, Float64Array, Int32Array, LargeStringArray, StringViewArray,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::{Int8Type, TimeUnit};
    let n = 8;
    let text = |v: Vec<Option<&str>>| -> ArrayRef { Arc::new(StringArray::from(v)) };
    let keys = DictionaryArray::<Int8Type>::new(
        arrow::array::Int8Array::from(vec![
            Some(1),
            Some(0),
            None,
            Some(1),
            Some(0),
            Some(1),
            Some(0),
            Some(1),
        ]),
        Arc::new(StringArray::from(vec!["red", "blue"])),
    );
    let mut json_field = Field::new("DOC", DataType::Utf8, true);
    json_field.set_metadata(std::collections::HashMap::from([(
        ebb::source::JSON_TEXT.to_string(),
        String::new(),
    )]));
    let schema = Schema::new(vec![
        Field::new("ID", DataType::Int64, true),
        Field::new("SMALL", DataType::Int32, true),
        Field::new("SCORE", DataType::Float64, true),
        Field::new("ACTIVE", DataType::Boolean, true),
        Field::new("NAME", DataType::Utf8, true),
        Field::new("BIG", DataType::LargeUtf8, true),
        Field::new("VIEW", DataType::Utf8View, true),
        Field::new("AT", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new(
            "AT_UTC",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("DAY", DataType::Date32, true),
        Field::new("COLOR", keys.data_type().clone(), true),
        json_field,
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![
            Some(1),
            Some(-2),
            Some(3),
            None,
            Some(5),
            Some(6),
            Some(7),
            Some(i64::MAX),
        ])),
        Arc::new(Int32Array::from(vec![
            Some(0),
            None,
            Some(-7),
            Some(1),
            Some(i32::MIN),
            Some(2),
            Some(3),
            Some(4),
        ])),
        Arc::new(Float64Array::from(vec![
            Some(1.5),
            Some(-0.0),
            Some(1e21),
            None,
            Some(0.1 + 0.2),
            Some(f64::NAN),
            Some(123456.789),
            Some(2.0),
        ])),
        Arc::new(BooleanArray::from(vec![
            Some(true),
            Some(false),
            None,
            Some(true),
            Some(true),
            Some(false),
            Some(true),
            Some(false),
        ])),
        text(vec![
            Some("Ada@Example.COM"),
            Some("ÉMILE Zola"),
            Some("quote \" back \\ tab \t nl \n ctl \u{1}"),
            None,
            Some(""),
            Some("  padded  "),
            Some("x"),
            Some("MiXeD"),
        ]),
        Arc::new(LargeStringArray::from(vec![
            Some("a"),
            None,
            Some("ß"),
            Some("d"),
            Some("e"),
            Some("f"),
            Some("g"),
            Some("h"),
        ])),
        Arc::new(StringViewArray::from(vec![
            Some("a view longer than twelve bytes"),
            Some("v"),
            None,
            Some("Ünïcode"),
            Some("w"),
            Some("x"),
            Some("y"),
            Some("z"),
        ])),
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(0),
            Some(1_700_000_000_123_456),
            None,
            Some(-1),
            Some(86_400_000_000),
            Some(1),
            Some(i64::MAX),
            Some(1_000_000),
        ])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![
                Some(5),
                None,
                Some(1_700_000_000_000_000),
                Some(0),
                Some(1),
                Some(2),
                Some(3),
                Some(4),
            ])
            .with_timezone("UTC"),
        ),
        Arc::new(Date32Array::from(vec![
            Some(0),
            Some(19_000),
            None,
            Some(-1),
            Some(1),
            Some(2),
            Some(3),
            Some(4),
        ])),
        Arc::new(keys),
        text(vec![
            Some(r#"{"a": [1, 2]}"#),
            Some("not json"),
            None,
            Some("3"),
            Some("{}"),
            Some("[]"),
            Some("null"),
            Some("\"s\""),
        ]),
    ];
    assert!(columns.iter().all(|c| c.len() == n));
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

/// The batch encoder (the run's hot path) writes, row for row, the same key, the same
/// payload bytes and the same errors as mapping a row and writing it as an object.
#[test]
fn the_batch_encoder_writes_what_the_general_path_writes() {
    let mappings = [
        // Every column as it is.
        "      - source: id\n        destination: ID\n      - source: small\n        destination: Small\n      - source: score\n        destination: Score\n      - source: active\n        destination: Active\n      - source: name\n        destination: Name\n      - source: big\n        destination: Big\n      - source: view\n        destination: View\n      - source: at\n        destination: At\n      - source: at_utc\n        destination: AtUtc\n      - source: day\n        destination: Day\n      - source: color\n        destination: Color\n      - source: doc\n        destination: Doc\n",
        // Transforms, the ASCII `lower` path among them, constants and paths.
        "      - source: name\n        destination: Email\n        transform: lower\n      - source: view\n        destination: Lower2\n        transform: lower\n      - source: big\n        destination: Up\n        transform: upper\n      - source: name\n        destination: Trimmed\n        transform: [trim, truncate(4)]\n      - source: score\n        destination: Rounded\n        transform: round(2)\n      - source: small\n        destination: Scaled\n        transform: scale(0, 10, 0, 100)\n      - source: name\n        destination: Fallback\n        transform: default('none')\n      - constant: warehouse\n        destination: Source\n      - constant: 1.25\n        destination: Rate\n        transform: round(1)\n      - source: $.doc.a[1]\n        destination: Second\n      - source: $.doc.a\n        destination: All\n      - source: id\n        destination: Key\n",
        // A transform that fails on some rows (`lower` needs text).
        "      - source: id\n        destination: Id\n      - source: score\n        destination: Broken\n        transform: lower\n",
    ];
    let b = wide_batch();
    for (n, m) in mappings.iter().enumerate() {
        let p = plan(m);
        let mapper = RowMapper::new(&p, b.schema()).unwrap();
        let order = ebb::map::payload_order(&p);
        let mut enc = ebb::map::encode::Encoded::default();
        mapper.encoder(&b).encode(0..b.num_rows(), &mut enc);
        assert_eq!(enc.rows.len(), b.num_rows());
        let mut errors = 0;
        for (row, got) in enc.rows.iter().enumerate() {
            let at = format!("mappings {n}, row {row}");
            let want_key = mapper.key(&b, row);
            match (got, want_key) {
                (ebb::map::encode::Row::NoKey(e), Err(w)) => assert_eq!(e, &w, "{at}"),
                (ebb::map::encode::Row::Row { key, kh, payload }, Ok(k)) => {
                    assert_eq!(enc.key(key), k, "{at}");
                    assert_eq!(*kh, ebb::engine::table::key_hash(&k), "{at}");
                    let want = mapper.map_row(&b, row).and_then(|fields| {
                        let mut out = String::new();
                        RowMapper::write_object(&fields, &order, Some((p.destination.key_field.as_str(), &k)), &mut out)
                            .map(|()| out)
                    });
                    match (payload, want) {
                        (Ok((range, h)), Ok(w)) => {
                            assert_eq!(enc.payload(range), w, "{at}");
                            assert_eq!(*h, ebb::engine::table::payload_hash(w.as_bytes()), "{at}");
                        }
                        (Err(e), Err(w)) => {
                            errors += 1;
                            assert_eq!(e, &w, "{at}");
                        }
                        (got, want) => panic!("{at}: encoder {got:?}, general path {want:?}"),
                    }
                }
                (got, want) => panic!("{at}: encoder {got:?}, general path {want:?}"),
            }
        }
        // The cases meant to fail do: NaN and an out-of-range timestamp; `lower` on numbers.
        assert!(errors > 0, "mappings {n}: no row failed");
    }
}
