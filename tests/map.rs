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
