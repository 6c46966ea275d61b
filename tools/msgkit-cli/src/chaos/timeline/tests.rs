use std::path::PathBuf;

use super::*;

/// A quick run as it looks in practice: four services at about 8 msg/s for 50 s of load and
/// 10 s of drain, with five faults and the dips and catch-ups they cause.
fn fixture() -> Timeline {
    let faults = vec![
        fault("kill inventory", 6.0, 6.3, Some(3.4)),
        fault("close connections", 14.0, 14.2, Some(1.8)),
        fault("restart rabbitmq", 20.0, 24.0, Some(6.5)),
        fault("restart postgres", 32.0, 35.0, Some(4.6)),
        fault("latency on payment", 40.0, 45.0, Some(5.8)),
    ];
    let series = crate::saga_services::SERVICES
        .iter()
        .enumerate()
        .map(|(i, name)| Series {
            name: (*name).to_owned(),
            points: (0..=120)
                .map(|step| {
                    let t = f64::from(step) * 0.5;
                    (t, fixture_rate(name, i as f64, t))
                })
                .collect(),
        })
        .collect();
    Timeline {
        title: "timeline picture check (synthetic run)".to_owned(),
        duration_secs: 60.0,
        load_ends_secs: 50.0,
        series,
        faults,
    }
}

fn fault(label: &str, start_secs: f64, end_secs: f64, recovered_secs: Option<f64>) -> FaultSpan {
    FaultSpan {
        label: label.to_owned(),
        start_secs,
        end_secs,
        recovered_secs,
    }
}

/// What `service` handled per second at `t`: a steady rate with a little jitter, cut by each
/// fault and followed by a catch-up on the backlog.
fn fixture_rate(service: &str, index: f64, t: f64) -> f64 {
    let within = |from: f64, to: f64| (from..to).contains(&t);
    let downstream = service == "payment" || service == "notify";
    let steady = 8.0 + 0.6 * (t * 1.3 + index * 1.9).sin();
    if within(20.0, 24.0) || t >= 52.0 {
        0.0
    } else if within(50.0, 52.0) {
        steady * (52.0 - t) / 2.0
    } else if (service == "inventory" && within(6.0, 8.5)) || (downstream && within(6.5, 9.0)) {
        if service == "inventory" { 0.0 } else { 2.0 }
    } else if (service == "inventory" && within(8.5, 10.0)) || (downstream && within(9.0, 10.5)) {
        13.0 + index * 0.4
    } else if within(14.0, 15.0) || within(32.0, 35.0) {
        if t < 20.0 { 2.0 } else { 1.0 }
    } else if within(24.0, 26.0) {
        15.5 + index * 0.5
    } else if within(15.0, 16.0) || within(26.0, 27.0) || within(35.0, 36.5) {
        11.5 + index * 0.3
    } else if downstream && within(40.0 + index - 2.0, 45.0 + index - 2.0) {
        3.5
    } else if downstream && within(45.0, 46.5 + index - 2.0) {
        12.0
    } else {
        steady
    }
}

/// Checks what a parser would: tags balance under one root, attributes are quoted, and `<` or
/// `&` never appear raw in text or attribute values.
fn assert_well_formed(svg: &str) {
    let svg = svg.trim_end();
    assert!(svg.starts_with("<svg "), "the document starts with <svg");
    let mut open: Vec<&str> = Vec::new();
    let mut rest = svg;
    while let Some(lt) = rest.find('<') {
        assert_escaped(&rest[..lt]);
        assert!(!open.is_empty() || lt == 0, "text outside the root element");
        let gt = rest[lt..].find('>').expect("every tag is closed") + lt;
        let tag = &rest[lt + 1..gt];
        assert!(!tag.contains('<'), "a tag contains '<': {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop(), Some(name.trim()), "closing tag matches");
            if open.is_empty() {
                assert_eq!(&rest[gt + 1..], "", "nothing follows the root element");
            }
        } else {
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name = body.split_whitespace().next().expect("a tag name");
            assert_attributes(&body[name.len()..]);
            if !self_closing {
                open.push(name);
            }
        }
        rest = &rest[gt + 1..];
    }
    assert!(open.is_empty(), "unclosed elements: {open:?}");
}

fn assert_attributes(mut attrs: &str) {
    loop {
        attrs = attrs.trim_start();
        if attrs.is_empty() {
            return;
        }
        let eq = attrs
            .find("=\"")
            .expect("attribute values are double-quoted");
        let name = &attrs[..eq];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "attribute name {name:?}"
        );
        let value_end = attrs[eq + 2..].find('"').expect("quote closed") + eq + 2;
        assert_escaped(&attrs[eq + 2..value_end]);
        attrs = &attrs[value_end + 1..];
    }
}

fn assert_escaped(text: &str) {
    assert!(!text.contains('<'), "raw '<' in {text:?}");
    for (i, _) in text.match_indices('&') {
        let entity = &text[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| entity.starts_with(e)),
            "raw '&' in {text:?}"
        );
    }
}

/// Every number in a coordinate attribute and every polyline point.
fn coordinates(svg: &str) -> (Vec<f64>, Vec<f64>) {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for (attr, is_x) in [
        (" x=\"", true),
        (" x1=\"", true),
        (" x2=\"", true),
        (" y=\"", false),
        (" y1=\"", false),
        (" y2=\"", false),
    ] {
        for (i, _) in svg.match_indices(attr) {
            let value = &svg[i + attr.len()..];
            let end = value.find('"').unwrap();
            let number = value[..end].parse::<f64>().unwrap();
            if is_x {
                xs.push(number)
            } else {
                ys.push(number)
            }
        }
    }
    for (i, _) in svg.match_indices(" points=\"") {
        let value = &svg[i + 9..];
        for point in value[..value.find('"').unwrap()].split_whitespace() {
            let (x, y) = point.split_once(',').unwrap();
            xs.push(x.parse().unwrap());
            ys.push(y.parse().unwrap());
        }
    }
    (xs, ys)
}

fn view_box(svg: &str) -> (f64, f64) {
    let start = svg.find("viewBox=\"").unwrap() + 9;
    let numbers: Vec<f64> = svg[start..start + svg[start..].find('"').unwrap()]
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(&numbers[..2], &[0.0, 0.0]);
    (numbers[2], numbers[3])
}

/// The y attribute of the text element that starts with `content`.
fn text_y(svg: &str, content: &str) -> f64 {
    let element = svg
        .match_indices(&format!(">{content}"))
        .map(|(at, _)| &svg[svg[..at].rfind('<').unwrap()..at])
        .find(|tag| tag.starts_with("<text "))
        .unwrap();
    let y = &element[element.find(" y=\"").unwrap() + 4..];
    y[..y.find('"').unwrap()].parse().unwrap()
}

#[test]
fn a_run_renders_as_well_formed_svg_with_every_fault_labelled() {
    let svg = render(&fixture());
    assert_well_formed(&svg);
    for label in [
        "kill inventory",
        "close connections",
        "restart rabbitmq",
        "restart postgres",
        "latency on payment",
        "load ends; draining",
        "timeline picture check (synthetic run)",
    ] {
        assert!(svg.contains(&format!(">{label}")), "{label} is shown");
    }
    for service in crate::saga_services::SERVICES {
        assert!(
            svg.contains(&format!(">{service}</text>")),
            "{service} is in the legend"
        );
    }
    assert_eq!(svg.matches("<polyline").count(), 4, "one line per service");
}

#[test]
fn xml_special_characters_in_labels_and_names_are_escaped() {
    let mut timeline = fixture();
    timeline.title = "chaos: <quick> & \"soak\"".to_owned();
    timeline.faults[0].label = "kill <inventory> & 'payment'".to_owned();
    timeline.series[0].name = "order<&>".to_owned();
    let svg = render(&timeline);
    assert_well_formed(&svg);
    assert!(svg.contains("chaos: &lt;quick&gt; &amp; &quot;soak&quot;"));
    assert!(svg.contains("kill &lt;inventory&gt; &amp; &apos;payment&apos;"));
    assert!(svg.contains(">order&lt;&amp;&gt;</text>"));
}

#[test]
fn every_drawn_coordinate_lies_inside_the_view_box_even_for_stray_samples() {
    let mut timeline = fixture();
    timeline.series[0].points.extend([
        (-3.0, 5.0),
        (75.0, 2.0),
        (10.0, -4.0),
        (f64::NAN, 1.0),
        (5.0, f64::INFINITY),
    ]);
    timeline
        .faults
        .push(fault("after the end", 58.0, 90.0, Some(40.0)));
    let svg = render(&timeline);
    assert_well_formed(&svg);
    let (width, height) = view_box(&svg);
    let (xs, ys) = coordinates(&svg);
    assert!(xs.len() > 400 && ys.len() > 400, "the lines were found");
    assert!(
        xs.iter().all(|x| (0.0..=width).contains(x)),
        "x within 0..{width}"
    );
    assert!(
        ys.iter().all(|y| (0.0..=height).contains(y)),
        "y within 0..{height}"
    );
}

#[test]
fn a_run_without_samples_or_faults_still_renders_a_picture() {
    for timeline in [
        Timeline::default(),
        Timeline {
            title: "chaos: empty".to_owned(),
            duration_secs: 30.0,
            load_ends_secs: 20.0,
            series: vec![Series {
                name: "order".to_owned(),
                points: Vec::new(),
            }],
            faults: Vec::new(),
        },
    ] {
        let svg = render(&timeline);
        assert_well_formed(&svg);
        assert!(svg.contains("no throughput samples"));
        assert!(svg.contains(">seconds since start</text>"));
        let (width, height) = view_box(&svg);
        let (xs, ys) = coordinates(&svg);
        assert!(xs.iter().all(|x| (0.0..=width).contains(x)));
        assert!(ys.iter().all(|y| (0.0..=height).contains(y)));
    }
}

#[test]
fn faults_close_together_get_their_labels_on_separate_lanes() {
    let mut timeline = fixture();
    timeline.faults = vec![
        fault("restart rabbitmq", 20.0, 24.0, Some(6.5)),
        fault("pause payment", 21.0, 23.0, None),
        fault("much later", 45.0, 46.0, Some(1.0)),
    ];
    let svg = render(&timeline);
    let (first, second) = (
        text_y(&svg, "restart rabbitmq"),
        text_y(&svg, "pause payment"),
    );
    assert!(
        first != second,
        "overlapping labels are stacked ({first} vs {second})"
    );
    assert_eq!(
        text_y(&svg, "much later"),
        first,
        "a label with room reuses the top lane"
    );
    assert!(svg.contains("pause payment: no recovery seen"));
}

#[test]
fn the_rate_axis_ends_on_a_rounded_value_above_the_highest_rate() {
    let series = |max: f64| {
        vec![Series {
            name: "order".to_owned(),
            points: vec![(0.0, 1.0), (1.0, max)],
        }]
    };
    assert_eq!(rounded_maximum(&series(8.4)), 10.0);
    assert_eq!(rounded_maximum(&series(17.3)), 20.0);
    assert_eq!(rounded_maximum(&series(230.0)), 250.0);
    assert_eq!(rounded_maximum(&series(0.0)), 1.0);
    assert_eq!(rounded_maximum(&[]), 1.0);
}

#[test]
fn write_saves_exactly_the_rendered_picture() {
    let path = std::env::temp_dir().join(format!("msgkit-timeline-{}.svg", std::process::id()));
    write(&fixture(), &path).unwrap();
    let written = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(written, render(&fixture()));
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The picture check a person would do, in headless Chromium (`scripts/ui-deps.sh` installs it
/// and playwright-core). `MSGKIT_UPDATE_SCREENSHOTS=1` copies the PNG to docs/images.
#[test]
fn the_fixture_run_renders_as_a_picture_in_a_browser() {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target"));
    std::fs::create_dir_all(target.join("chaos")).unwrap();
    let svg = target.join("chaos/timeline-fixture.svg");
    let png = target.join("chaos/timeline-fixture.png");
    let _ = std::fs::remove_file(&png);
    write(&fixture(), &svg).unwrap();
    let script = workspace().join("tools/ui-screenshot/svg-screenshot.mjs");
    let output = std::process::Command::new("node")
        .arg(&script)
        .arg(&svg)
        .arg(&png)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node ({e}); run scripts/ui-deps.sh"));
    assert!(
        output.status.success(),
        "the browser check failed (run scripts/ui-deps.sh if Chromium or playwright-core is missing):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG was written");
    assert!(
        bytes.len() > 20_000,
        "the picture has content ({} bytes)",
        bytes.len()
    );
    if std::env::var("MSGKIT_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        std::fs::copy(&png, workspace().join("docs/images/chaos-timeline.png")).unwrap();
    }
}
