//! Two small SVG charts, written by hand (no plotting dependency for two pictures).

use super::Stage;
use super::e2e::OpenLoopStep;

/// Horizontal bars: every stage's rate; kit stages beside the ceiling they are measured
/// against.
pub fn throughput(stages: &[Stage]) -> String {
    let max = stages.iter().map(|s| s.rate).fold(1.0, f64::max);
    let (width, bar_height, left) = (900.0, 26.0, 380.0);
    let height = 40.0 + stages.len() as f64 * (bar_height + 10.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13"><text x="10" y="22" font-size="15" font-weight="bold">Throughput by stage (messages/s)</text>"#
    );
    for (i, stage) in stages.iter().enumerate() {
        let y = 36.0 + i as f64 * (bar_height + 10.0);
        let w = (width - left - 90.0) * stage.rate / max;
        let colour = if stage.name.starts_with("raw") {
            "#9aa5b1"
        } else {
            "#e8590c"
        };
        svg.push_str(&format!(
            r#"{name}<rect x="{left}" y="{y}" width="{w:.1}" height="{bar_height}" fill="{colour}"/><text x="{tx:.1}" y="{ty}">{rate:.0}{ratio}</text>"#,
            ty = y + 18.0,
            name = label(&stage.name, y),
            tx = left + w + 6.0,
            rate = stage.rate,
            ratio = stage.ratio.map(|r| format!(" ({r:.2}×)")).unwrap_or_default(),
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// The longest stage name that fits the label column on one line (13 px sans-serif).
const LABEL_CHARS: usize = 56;

/// A stage's name left of its bar at `y`: on two lines when it would run into the bar.
fn label(name: &str, y: f64) -> String {
    if name.chars().count() <= LABEL_CHARS {
        return format!(r#"<text x="10" y="{:.1}">{name}</text>"#, y + 18.0);
    }
    let limit = name
        .char_indices()
        .nth(LABEL_CHARS)
        .map_or(name.len(), |(i, _)| i);
    let split = name[..limit].rfind(' ').unwrap_or(limit);
    let (first, second) = name.split_at(split);
    format!(
        r#"<text x="10" y="{:.1}" font-size="12"><tspan>{first}</tspan><tspan x="10" dy="13">{}</tspan></text>"#,
        y + 11.0,
        second.trim_start()
    )
}

/// p50 and p99 end-to-end latency against offered load.
pub fn latency(steps: &[OpenLoopStep]) -> String {
    let (width, height, left, bottom, top) = (700.0, 380.0, 70.0, 330.0, 40.0);
    let max_rate = steps.iter().map(|s| s.offered_per_sec).fold(1.0, f64::max) * 1.1;
    let max_ms = steps
        .iter()
        .map(|s| s.p99_ms)
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.1;
    let x = |rate: f64| left + (width - left - 30.0) * rate / max_rate;
    let y = |ms: f64| bottom - (bottom - top) * ms / max_ms;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13"><text x="10" y="22" font-size="15" font-weight="bold">End-to-end latency vs offered load</text><line x1="{left}" y1="{bottom}" x2="{xe}" y2="{bottom}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/><text x="{xl}" y="{yl}">offered orders/s</text><text x="8" y="{top}">ms</text>"#,
        xe = width - 20.0,
        xl = width / 2.0 - 40.0,
        yl = bottom + 35.0,
    );
    for (label, colour, value) in [
        (
            "p50",
            "#1c7ed6",
            (|s: &OpenLoopStep| s.p50_ms) as fn(&OpenLoopStep) -> f64,
        ),
        ("p99", "#e8590c", |s: &OpenLoopStep| s.p99_ms),
    ] {
        let points: Vec<String> = steps
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.offered_per_sec), y(value(s))))
            .collect();
        svg.push_str(&format!(
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        ));
        if let Some(last) = steps.last() {
            svg.push_str(&format!(
                r#"<text x="{:.1}" y="{:.1}" fill="{colour}">{label}</text>"#,
                x(last.offered_per_sec) + 6.0,
                y(value(last))
            ));
        }
        for s in steps {
            svg.push_str(&format!(
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="11">{:.0}</text>"#,
                x(s.offered_per_sec),
                y(value(s)),
                x(s.offered_per_sec) - 8.0,
                y(value(s)) - 8.0,
                value(s)
            ));
        }
    }
    for s in steps {
        svg.push_str(&format!(
            r#"<text x="{:.1}" y="{:.1}" font-size="11">{:.0}</text>"#,
            x(s.offered_per_sec) - 8.0,
            bottom + 16.0,
            s.offered_per_sec
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_stage_name_takes_two_lines_instead_of_running_into_its_bar() {
        let short = label("raw: consume and ack", 36.0);
        assert_eq!(
            short,
            r#"<text x="10" y="54.0">raw: consume and ack</text>"#
        );
        let name = "raw: consume, inbox rows of a batch in one INSERT, commit, ack (10 workers, batches of 50)";
        let long = label(name, 36.0);
        let lines: Vec<&str> = long
            .split("<tspan")
            .skip(1)
            .map(|part| {
                let text = &part[part.find('>').unwrap() + 1..];
                &text[..text.find("</tspan>").unwrap()]
            })
            .collect();
        assert_eq!(lines.len(), 2, "{long}");
        assert!(lines.iter().all(|line| line.chars().count() <= LABEL_CHARS));
        assert_eq!(format!("{} {}", lines[0], lines[1]), name);
    }
}
