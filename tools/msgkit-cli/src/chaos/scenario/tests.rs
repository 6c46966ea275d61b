//! Scenario files: the repository's parse, bad ones are refused.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;

use super::*;

#[test]
fn every_scenario_in_the_repository_parses_and_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../chaos");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // Included parts (a system without a name or duration) are checked through the
        // scenarios that include them.
        if path.extension().is_some_and(|e| e == "toml") {
            load(path.to_str().unwrap()).unwrap();
            seen += 1;
        }
    }
    assert!(seen >= 3, "the scenarios in {}", dir.display());
}

#[test]
fn an_unknown_fault_kind_is_an_error_not_a_skip() {
    let text = r#"
        name = "x"
        duration_secs = 1
        drain_timeout_secs = 1
        [[services]]
        name = "a"
        binary = "a"
        [[faults]]
        at_secs = 1
        kind = "netem"
        service = "a"
    "#;
    let error = toml::from_str::<Scenario>(text).unwrap_err().to_string();
    assert!(error.contains("netem"), "{error}");
}

#[test]
fn a_fault_on_an_unknown_service_is_refused() {
    let text = r#"
        name = "x"
        duration_secs = 1
        drain_timeout_secs = 1
        [[services]]
        name = "a"
        binary = "a"
        [[faults]]
        at_secs = 1
        kind = "pause_service"
        service = "b"
        duration_secs = 1
    "#;
    let scenario: Scenario = toml::from_str(text).unwrap();
    assert!(scenario.validate().unwrap_err().contains("unknown service"));
}
