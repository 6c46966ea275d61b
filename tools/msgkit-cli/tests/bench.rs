//! `msgkit bench` runs its throughput stages and reports every repetition. Whether the figures
//! are good is for the bench itself to show (docs/performance.md); here only that it measures.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `msgkit --json bench ARGS --out OUT`: its JSON report, and OUT.
async fn bench(name: &str, args: &[&str]) -> (Value, PathBuf) {
    let out = std::env::temp_dir().join(format!("msgkit-bench-{name}-{}", std::process::id()));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgkit"))
        .args(["--json", "bench"])
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (serde_json::from_str(&stdout).unwrap(), out)
}

fn remove(out: &Path) {
    std::fs::remove_dir_all(out).unwrap();
}

#[tokio::test]
async fn the_bench_measures_every_throughput_stage_in_repeated_rounds() {
    let args = [
        "--stages",
        "raw,relay,consumer",
        "--messages",
        "300",
        "--repeat",
        "2",
    ];
    let (report, out) = bench("stages", &args).await;
    assert_eq!(report["repetitions"], 2);
    let stages = report["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 9, "{names:?}");
    for stage in stages {
        let samples = stage["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 2, "{stage}");
        assert!(samples.iter().all(|s| s.as_f64().unwrap() > 0.0), "{stage}");
        if stage["name"].as_str().unwrap().starts_with("kit:") {
            assert!(stage["ratio"].as_f64().unwrap() > 0.0, "{stage}");
        }
    }
    for file in ["report.md", "report.json", "throughput.svg"] {
        assert!(out.join(file).is_file(), "{file} written");
    }
    remove(&out);
}

#[tokio::test]
async fn the_bench_measures_how_fast_timers_fire_and_their_lag_at_half_that_rate() {
    let (report, out) = bench("timers", &["--stages", "timers", "--messages", "300"]).await;
    let timers = &report["timers"];
    let max = timers["max_per_sec"].as_f64().unwrap();
    assert!(max > 0.0, "{timers}");
    let half = timers["lag_run_per_sec"].as_f64().unwrap();
    assert!(
        (half - max / 2.0).abs() < 1e-6 * max,
        "half the maximum: {timers}"
    );
    let (p50, p99) = (
        timers["lag_p50_ms"].as_f64().unwrap(),
        timers["lag_p99_ms"].as_f64().unwrap(),
    );
    assert!(p50 >= 0.0 && p99 >= p50, "{timers}");
    remove(&out);
}
