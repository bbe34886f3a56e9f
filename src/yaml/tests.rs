//! The YAML tree's tests: scalars, positions, anchors and merges, duplicates, limits.

use super::*;
use crate::diagnostics::{Code, Diagnostic};

fn load(text: &str) -> (Node, Vec<Diagnostic>) {
    parse(&SourceFile::new("t.yaml", text.to_string())).expect("parses")
}

#[test]
fn scalars_resolve_by_the_core_schema() {
    let (n, _) = load("a: 1\nb: 62.0\nc: \"62.0\"\nd: yes\ne: ~\nf: true\ng: 1e3\nh: 0x1F\n");
    let j = n.to_json();
    assert_eq!(j["a"], 1);
    assert_eq!(j["b"], 62.0);
    assert_eq!(j["c"], "62.0");
    assert_eq!(j["d"], "yes");
    assert!(j["e"].is_null());
    assert_eq!(j["f"], true);
    assert_eq!(j["g"], 1000.0);
    assert_eq!(j["h"], 31);
}

#[test]
fn keys_and_values_keep_their_positions() {
    let (n, _) = load("models:\n  - name: x\n    source:\n      query: select 1\n");
    let (node, key) = n.lookup(&["models", "0", "source", "query"]).unwrap();
    assert_eq!((node.pos.line, node.pos.col), (4, 14));
    let key = key.unwrap();
    assert_eq!((key.line, key.col, key.end_col), (4, 7, 12));
}

#[test]
fn duplicate_keys_are_reported_at_the_later_one() {
    let (n, d) = load("a: 1\nb: 2\na: 3\n");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code, Code::DuplicateKey);
    assert_eq!((d[0].span.line, d[0].span.col), (3, 1));
    assert_eq!(n.to_json()["a"], 3);
}

#[test]
fn anchors_aliases_and_merge_keys() {
    let (n, d) = load("base: &b\n  x: 1\n  y: 2\nuse:\n  <<: *b\n  y: 3\n");
    assert!(d.is_empty());
    let j = n.to_json();
    assert_eq!(j["use"]["x"], 1);
    assert_eq!(j["use"]["y"], 3);
}

#[test]
fn syntax_errors_carry_a_position() {
    let err = parse(&SourceFile::new("t.yaml", "a: [1, 2\nb: 3\n".to_string())).unwrap_err();
    assert_eq!(err.code, Code::YamlSyntax);
    assert!(err.span.line >= 1);
}

/// The classic "billion laughs": each level repeats the one before ten times.
fn alias_bomb() -> String {
    let mut t = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let (prev, cur) = (w[0], w[1]);
        t.push_str(&format!("{cur}: &{cur} [{}]\n", vec![format!("*{prev}"); 10].join(",")));
    }
    t
}

#[test]
fn an_alias_bomb_stops_at_the_alias_that_crosses_the_limit() {
    let err = parse(&SourceFile::new("t.yaml", alias_bomb())).unwrap_err();
    assert_eq!(err.code, Code::YamlLimit);
    // Lines 1-4 copy about 22,000 nodes; each `*d` on line 5 copies 10,111 more, and
    // the eighth crosses 100,000.
    assert_eq!((err.span.line, err.span.col), (5, 29), "{}", err.message);
    assert!(err.message.contains("100000"), "{}", err.message);
}

#[test]
fn nested_anchors_count_as_copies_too() {
    // No alias at all, but every level keeps a copy of everything inside it.
    let mut t = String::new();
    for i in 0..100 {
        t.push_str(&format!("{}- &a{i}\n", "  ".repeat(i)));
    }
    t.push_str(&format!("{}- [{}]\n", "  ".repeat(100), vec!["1"; 2000].join(",")));
    let err = parse(&SourceFile::new("t.yaml", t)).unwrap_err();
    assert_eq!(err.code, Code::YamlLimit);
}

#[test]
fn reasonable_reuse_is_fine() {
    let mut t = String::from("base: &b {x: 1, y: [1, 2, 3], z: {a: 1}}\nlist:\n");
    for _ in 0..500 {
        t.push_str("  - {<<: *b, y: 3}\n");
    }
    let (n, d) = load(&t);
    assert!(d.is_empty());
    assert_eq!(n.to_json()["list"][499]["x"], 1);
}

#[test]
fn nesting_is_limited_in_block_and_flow_style() {
    let block = "- ".repeat(10_000) + "x";
    let flow = "[".repeat(10_000) + &"]".repeat(10_000);
    let maps = "{a: ".repeat(10_000) + &"}".repeat(10_000);
    for text in [block, flow, maps] {
        let err = parse(&SourceFile::new("t.yaml", text)).unwrap_err();
        assert_eq!(
            err.code,
            Code::YamlLimit,
            "{} at {}:{}",
            err.message,
            err.span.line,
            err.span.col
        );
        assert!(err.message.contains("deeper than 128"), "{}", err.message);
    }
    let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
    assert!(parse(&SourceFile::new("t.yaml", ok)).is_ok());
}

#[test]
fn a_mapping_with_many_duplicate_keys_keeps_the_last_of_each() {
    let mut t = String::new();
    for round in 0..3 {
        for k in 0..2000 {
            t.push_str(&format!("k{k}: {round}\n"));
        }
    }
    let (n, d) = load(&t);
    assert_eq!(d.len(), 4000);
    let j = n.to_json();
    assert_eq!(j.as_object().unwrap().len(), 2000);
    assert_eq!(j["k1999"], 2);
}
