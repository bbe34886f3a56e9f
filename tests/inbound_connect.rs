//! `ebb validate --connect` on inbound models: the object described (a field it lacks is
//! E906), the table checked against the columns a run would write (E913 when it cannot
//! hold them, N914 when it does not exist yet), on DuckDB, PostgreSQL and Snowflake.

use crate::inbound::{model, Inbound, Warehouse};
use crate::support::{ebb, stdout};

/// (exit code, [(code, message)]) of `validate --connect --format json`.
fn connect(t: &Inbound) -> (i32, Vec<(String, String)>) {
    let o = ebb(t.path(), &["validate", "--connect", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    let list = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_string(),
                d["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (o.status.code().unwrap(), list)
}

fn codes(found: &[(String, String)]) -> Vec<&str> {
    found.iter().map(|(c, _)| c.as_str()).collect()
}

/// Before the first run the table is missing (a note; the DuckDB file is not created by
/// validating); after it, nothing to say; a column dropped or retyped by hand is an error
/// naming it, before any run tries to write.
fn table_story(t: &Inbound, alter: &dyn Fn(&str)) {
    let (code, found) = connect(t);
    assert_eq!((code, codes(&found)), (0, vec!["N914"]), "{found:?}");
    assert!(found[0].1.contains("does not exist yet"), "{found:?}");
    if t.pg_schema.is_none() {
        assert!(
            !t.path().join("warehouse.duckdb").exists(),
            "validating created the file"
        );
    }
    t.seed(3);
    t.ok();
    let (code, found) = connect(t);
    assert_eq!((code, found.len()), (0, 0), "{found:?}");

    alter("ALTER TABLE {t} DROP COLUMN email");
    let (code, found) = connect(t);
    assert_eq!((code, codes(&found)), (1, vec!["E913"]), "{found:?}");
    assert!(found[0].1.to_lowercase().contains("`email`"), "{found:?}");
    alter("ALTER TABLE {t} ADD COLUMN email BOOLEAN");
    let (code, found) = connect(t);
    assert_eq!((code, codes(&found)), (1, vec!["E913"]), "{found:?}");
    assert!(found[0].1.to_lowercase().contains("`email`"), "{found:?}");
}

#[test]
fn validate_connect_checks_an_inbound_table_on_snowflake() {
    require_postgres!();
    let t = Inbound::on(
        "sfconnect",
        &model("raw.contacts", "      api: rest\n", "soft"),
        Warehouse::Snowflake,
    );
    table_story(&t, &|sql| {
        // Behind ebb's back, on the server's database: Snowflake's names are upper case.
        t.snowflake_sql(
            &sql.replace("{t}", "\"RAW\".\"CONTACTS\"")
                .replace("COLUMN email", "COLUMN \"EMAIL\""),
        );
    });
}

#[test]
fn validate_connect_checks_an_inbound_table_on_duckdb() {
    let t = Inbound::new("connect", &model("raw.contacts", "      api: rest\n", "soft"), false);
    let path = t.path().join("warehouse.duckdb");
    table_story(&t, &|sql| {
        let c = duckdb::Connection::open(&path).unwrap();
        c.execute_batch(&sql.replace("{t}", "raw.contacts")).unwrap();
    });
}

#[test]
fn validate_connect_checks_an_inbound_table_on_postgres() {
    require_postgres!();
    let t = Inbound::new("connect", &model("raw.contacts", "      api: rest\n", "soft"), true);
    let table = format!("{}.contacts", t.pg_schema.as_deref().unwrap());
    let client = crate::support::pg_client(&t.rt);
    table_story(&t, &|sql| {
        t.rt.block_on(client.batch_execute(&sql.replace("{t}", &table)))
            .unwrap();
    });
    t.drop_pg();
}

#[test]
fn validate_connect_names_a_field_the_object_does_not_have() {
    let yaml = model("raw.contacts", "      api: rest\n", "soft").replace(
        "fields: [Id, LastName, Email, SystemModstamp]",
        "fields: [Id, LastName, Email, SystemModstamp, Shoe_Size__c]",
    );
    let t = Inbound::new("nofield", &yaml, false);
    let (code, found) = connect(&t);
    assert_eq!((code, codes(&found)), (1, vec!["E906"]), "{found:?}");
    assert!(
        found[0].1.contains("`Shoe_Size__c`") && found[0].1.contains("contacts_in"),
        "{found:?}"
    );
}
