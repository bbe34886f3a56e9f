use super::*;

#[test]
fn table_names() {
    assert_eq!(
        TableName::parse("raw.crm_customers"),
        Ok(TableName {
            schema: Some("raw".into()),
            table: "crm_customers".into()
        })
    );
    assert_eq!(
        TableName::parse(r#""my.schema"."Odd ""name""""#),
        Ok(TableName {
            schema: Some("my.schema".into()),
            table: "Odd \"name\"".into()
        })
    );
    assert_eq!(
        TableName::parse("t"),
        Ok(TableName {
            schema: None,
            table: "t".into()
        })
    );
    assert!(TableName::parse("a.b.c").is_err());
    assert!(TableName::parse("a..c").is_err());
    assert!(TableName::parse("\"a").is_err());
    assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
}

fn spec(mode: Mode, on_deleted: OnDeleted) -> TableSpec {
    TableSpec {
        connection: "w".into(),
        table: "raw.t".into(),
        key: "id".into(),
        mode,
        on_deleted,
        deleted_column: DELETED_COLUMN.into(),
        version_column: Some("v".into()),
        columns: vec![
            Column {
                name: "id".into(),
                ty: ColumnType::Text,
            },
            Column {
                name: "v".into(),
                ty: ColumnType::Bigint,
            },
        ],
        delete_by_key: false,
    }
}

fn row(id: &str, v: i64, deleted: bool) -> TableRow {
    TableRow {
        values: vec![Val::Str(id.into()), Val::Int(v)],
        deleted,
    }
}

#[test]
fn the_last_row_of_a_key_wins_and_hard_deletes_are_set_apart() {
    let s = stage(
        &spec(Mode::Upsert, OnDeleted::Hard),
        vec![
            row("a", 1, false),
            row("b", 1, false),
            row("a", 2, false),
            row("c", 1, true),
        ],
    )
    .unwrap();
    assert_eq!(s.collapsed, 1);
    assert_eq!(s.batch.num_rows(), 2);
    assert_eq!(s.delete_keys.len(), 1);
    let s = stage(
        &spec(Mode::Append, OnDeleted::Soft),
        vec![row("a", 1, false), row("a", 2, false), row("a", 2, true)],
    )
    .unwrap();
    assert_eq!((s.collapsed, s.batch.num_rows(), s.batch.num_columns()), (1, 2, 3));
}

#[test]
fn a_bad_value_names_key_and_column() {
    let e = stage(
        &spec(Mode::Upsert, OnDeleted::Soft),
        vec![
            row("a", 1, false),
            TableRow {
                values: vec![Val::Str("b".into()), Val::Str("x".into())],
                deleted: false,
            },
        ],
    )
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        "table `raw.t`, row with key `b`, column `v`: text cannot be written to a bigint column; \
         nothing of this call was written"
    );
    let e = stage(
        &spec(Mode::Upsert, OnDeleted::Soft),
        vec![TableRow {
            values: vec![Val::Null, Val::Int(1)],
            deleted: false,
        }],
    )
    .err()
    .unwrap();
    assert!(matches!(e, TableError::NullKey { row: 0, .. }));
}

#[test]
fn specs_are_checked() {
    let mut s = spec(Mode::Append, OnDeleted::Soft);
    s.version_column = None;
    assert!(check_spec(&s)
        .unwrap_err()
        .to_string()
        .contains("append mode needs a version column"));
    let mut s = spec(Mode::Upsert, OnDeleted::Soft);
    s.key = "nope".into();
    assert!(check_spec(&s).is_err());
}
