//! What a bench run writes besides its figures: the machine it ran on, and the markdown
//! table of the stages.

use serde_json::json;

use crate::table;

use super::{Stage, e2e};

pub(super) fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.to_owned()))
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": cpu,
        "memory": memory,
        "rabbitmq": "local node (see scripts/stack.sh)",
        "date": chrono::Utc::now().to_rfc3339(),
    })
}

pub(super) fn markdown(stages: &[Stage], e2e: Option<&e2e::EndToEnd>) -> String {
    let rows: Vec<Vec<String>> = stages
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                format!("{:.0}", s.rate),
                s.ceiling.clone().unwrap_or_default(),
                s.ratio.map(|r| format!("{r:.2}")).unwrap_or_default(),
                match (s.ratio, s.target) {
                    (Some(r), Some(t)) => {
                        format!("≥ {t} {}", if r >= t { "met" } else { "NOT met" })
                    }
                    _ => String::new(),
                },
            ]
        })
        .collect();
    let mut out = String::from(
        "| stage | msgs/s | against | ratio | target |\n| --- | ---: | --- | ---: | --- |\n",
    );
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    if let Some(e2e) = e2e {
        out.push_str(&e2e.markdown());
    }
    let _ = table::render;
    out
}
