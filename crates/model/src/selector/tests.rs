use super::*;
use proptest::prelude::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn evaluates_each_operator() {
    let l = labels(&[("role", "db"), ("tier", "back")]);
    let cases = [
        ("all()", true),
        ("role == 'db'", true),
        ("role == \"web\"", false),
        ("role != 'web'", true),
        ("missing != 'x'", true),
        ("role in {'db', 'cache'}", true),
        ("missing in {'db'}", false),
        ("role not in {'db'}", false),
        ("missing not in {'db'}", true),
        ("has(tier)", true),
        ("!has(tier)", false),
        ("has(role) && tier == 'back'", true),
        ("role == 'x' || tier == 'back'", true),
        ("!(role == 'db' && tier == 'back')", false),
        ("(role == 'x' || role == 'db') && has(tier)", true),
    ];
    for (text, want) in cases {
        let sel = Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(sel.matches(&l), want, "{text}");
    }
}

#[test]
fn rejects_malformed() {
    for bad in [
        "",
        "role ==",
        "role == db",
        "role in {'a'",
        "has(role",
        "role == 'a' &&",
        "a == 'b' c",
        "== 'a'",
        "role not {'a'}",
        "'unterminated",
    ] {
        assert!(Selector::parse(bad).is_err(), "{bad:?} should not parse");
    }
}

#[test]
fn keyword_prefixes_are_keys() {
    assert_eq!(
        Selector::parse("index == 'x'").unwrap(),
        Selector::Eq("index".into(), "x".into())
    );
    assert_eq!(
        Selector::parse("allowed == 'x'").unwrap(),
        Selector::Eq("allowed".into(), "x".into())
    );
}

#[test]
fn hostile_values_round_trip() {
    let sel = Selector::Eq("k".into(), "a\"b\\c' -A FORWARD; \n".into());
    assert_eq!(Selector::parse(&sel.to_string()).unwrap(), sel);
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z]{1,6}", "[a-z]{1,4}\\.io/[a-z][a-z0-9_.-]{0,5}[a-z]"]
}

fn arb_value() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9]{0,5}", ".{0,8}"]
}

pub(crate) fn arb_selector() -> impl Strategy<Value = Selector> {
    let leaf = prop_oneof![
        Just(Selector::All),
        (arb_key(), arb_value()).prop_map(|(k, v)| Selector::Eq(k, v)),
        (arb_key(), arb_value()).prop_map(|(k, v)| Selector::NotEq(k, v)),
        (arb_key(), prop::collection::btree_set(arb_value(), 0..3))
            .prop_map(|(k, v)| Selector::In(k, v)),
        (arb_key(), prop::collection::btree_set(arb_value(), 0..3))
            .prop_map(|(k, v)| Selector::NotIn(k, v)),
        arb_key().prop_map(Selector::Has),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|s| Selector::Not(Box::new(s))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Selector::And),
            prop::collection::vec(inner, 2..4).prop_map(Selector::Or),
        ]
    })
}

proptest! {
    #[test]
    fn printer_and_parser_round_trip(sel in arb_selector()) {
        let printed = sel.to_string();
        let parsed = Selector::parse(&printed).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed, sel);
    }

    #[test]
    fn required_keys_are_required(sel in arb_selector(), l in prop::collection::btree_map(arb_key(), arb_value(), 0..4)) {
        if sel.matches(&l) {
            for k in sel.required_keys() {
                prop_assert!(l.contains_key(k));
            }
        }
    }
}
