//! An SVG timeline of one chaos run: each service's throughput over time, with a shaded band
//! for every fault and a marker where the system recovered, so a person sees where each fault
//! hit and how throughput reacted. Written by hand like `bench/plot.rs`: one picture does not
//! justify a plotting dependency.
use std::fmt::Write as _;

/// What one chaos run looked like, in seconds since the run started.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// The heading, e.g. "chaos: quick (PASSED)".
    pub title: String,
    /// Load plus drain: the length of the x axis.
    pub duration_secs: f64,
    /// Where the load stopped and the system was left to drain (a vertical marker).
    pub load_ends_secs: f64,
    /// Messages handled per second by each service (from its `msgkit_consumed_total` with
    /// outcome ack), sampled about every 0.5-1 s.
    pub series: Vec<Series>,
    /// The faults injected, in any order.
    pub faults: Vec<FaultSpan>,
}

/// One service's throughput: `(seconds since start, messages per second)`.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One fault, from when it was injected until it was lifted.
#[derive(Debug, Clone, Default)]
pub struct FaultSpan {
    pub label: String,
    pub start_secs: f64,
    pub end_secs: f64,
    /// Seconds after `start_secs` when the system had recovered, if it did.
    pub recovered_secs: Option<f64>,
}

/// Writes the picture of `timeline` to `path`.
pub fn write(timeline: &Timeline, path: &std::path::Path) -> std::io::Result<()> {
    std::fs::write(path, render(timeline))
}

const WIDTH: f64 = 960.0;
const LEFT: f64 = 64.0;
/// Room right of the plot for the legend.
const RIGHT: f64 = 150.0;
const TITLE_HEIGHT: f64 = 40.0;
const LANE_HEIGHT: f64 = 16.0;
const PLOT_HEIGHT: f64 = 300.0;
/// Below the plot: tick labels and the axis title.
const BOTTOM: f64 = 48.0;
const FONT_SIZE: f64 = 12.0;
/// Sans-serif glyphs average a little over half the font size; labels are laid out with this
/// estimate since SVG has no text measurement before rendering.
const CHAR_WIDTH: f64 = FONT_SIZE * 0.58;
/// Distinct and readable on white; none is the red of the fault bands.
const PALETTE: [&str; 8] = [
    "#1c7ed6", "#e8590c", "#2f9e44", "#ae3ec9", "#f59f00", "#0c8599", "#d6336c", "#495057",
];
const FAULT_COLOUR: &str = "#c92a2a";
const MARKER_COLOUR: &str = "#495057";

/// The SVG text of the picture. Always a complete picture: without samples or faults it still
/// shows the axes.
pub fn render(timeline: &Timeline) -> String {
    let labels = place_labels(timeline);
    let lanes = labels.iter().map(|l| l.lane + 1).max().unwrap_or(0);
    let plot_top = TITLE_HEIGHT + lanes as f64 * LANE_HEIGHT + 8.0;
    let frame = Frame {
        x_max: positive_or_one(timeline.duration_secs),
        y_max: rounded_maximum(&timeline.series),
        top: plot_top,
        bottom: plot_top + PLOT_HEIGHT,
    };
    let height = frame.bottom + BOTTOM;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="{FONT_SIZE}"><rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/><text x="10" y="24" font-size="16" font-weight="bold">{}</text>"#,
        escape(&timeline.title)
    );
    fault_bands(&mut svg, timeline, &frame);
    axes(&mut svg, &frame);
    lines(&mut svg, &timeline.series, &frame);
    marker_labels(&mut svg, &labels, &frame);
    legend(&mut svg, &timeline.series, &frame);
    svg.push_str("</svg>\n");
    svg
}

/// The plot area and what its edges stand for.
struct Frame {
    x_max: f64,
    y_max: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    fn right(&self) -> f64 {
        WIDTH - RIGHT
    }

    /// Seconds to pixels, held inside the plot so stray samples cannot leave the picture.
    fn x(&self, secs: f64) -> f64 {
        LEFT + (self.right() - LEFT) * (secs / self.x_max).clamp(0.0, 1.0)
    }

    fn y(&self, rate: f64) -> f64 {
        self.bottom - (self.bottom - self.top) * (rate / self.y_max).clamp(0.0, 1.0)
    }
}

/// A text above the plot, tied by a thin line to the time it names.
struct Label {
    text: String,
    at_secs: f64,
    colour: &'static str,
    lane: usize,
}

/// Fault labels and the load-end marker, each in the first lane where it does not overlap the
/// label before it: faults close together stack instead of printing over each other.
fn place_labels(timeline: &Timeline) -> Vec<Label> {
    let mut labels: Vec<Label> = timeline
        .faults
        .iter()
        .map(|fault| Label {
            text: match fault.recovered_secs {
                // As the report counts it: from the fault's end (its lifting).
                Some(r) => format!(
                    "{}: recovered in {:.1} s",
                    fault.label,
                    (r - (fault.end_secs - fault.start_secs)).max(0.0)
                ),
                None => format!("{}: no recovery seen", fault.label),
            },
            at_secs: fault.start_secs,
            colour: FAULT_COLOUR,
            lane: 0,
        })
        .collect();
    labels.push(Label {
        text: "load ends; draining".to_owned(),
        at_secs: timeline.load_ends_secs,
        colour: MARKER_COLOUR,
        lane: 0,
    });
    labels.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
    // Lane layout only needs the horizontal scale, which does not depend on the lane count.
    let frame = Frame {
        x_max: positive_or_one(timeline.duration_secs),
        y_max: 1.0,
        top: 0.0,
        bottom: 0.0,
    };
    let mut lane_ends: Vec<f64> = Vec::new();
    for label in &mut labels {
        let (start, end) = label_extent(&label.text, frame.x(label.at_secs));
        let x = frame.x(label.at_secs);
        // A label's line runs down through every lane below it: take a lane only if no text
        // in the lanes below covers this time.
        let free = |lane: usize| {
            lane_ends[lane] + 8.0 < start && lane_ends[lane + 1..].iter().all(|&e| e + 2.0 < x)
        };
        match (0..lane_ends.len()).find(|&lane| free(lane)) {
            Some(lane) => {
                label.lane = lane;
                lane_ends[lane] = end;
            }
            None => {
                label.lane = lane_ends.len();
                lane_ends.push(end);
            }
        }
    }
    labels
}

/// Where a label's text starts and ends: at its time, moved left if it would run off the
/// picture's right edge.
fn label_extent(text: &str, x: f64) -> (f64, f64) {
    let width = text.chars().count() as f64 * CHAR_WIDTH;
    let start = (x + 3.0).min(WIDTH - 6.0 - width).max(2.0);
    (start, start + width)
}

fn fault_bands(svg: &mut String, timeline: &Timeline, frame: &Frame) {
    for fault in &timeline.faults {
        let start = frame.x(fault.start_secs);
        // A fault over in an instant (a kill) still gets a visible band.
        let width = (frame.x(fault.end_secs) - start).max(3.0);
        let _ = write!(
            svg,
            r#"<rect x="{start:.1}" y="{top:.1}" width="{width:.1}" height="{h:.1}" fill="{FAULT_COLOUR}" fill-opacity="0.13"><title>{label}</title></rect>"#,
            top = frame.top,
            h = frame.bottom - frame.top,
            label = escape(&fault.label),
        );
        if let Some(recovered) = fault.recovered_secs {
            let x = frame.x(fault.start_secs + recovered);
            let _ = write!(
                svg,
                r#"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{b:.1}" stroke="{FAULT_COLOUR}" stroke-width="1" stroke-dasharray="2 3"/><path d="M{l:.1},{b:.1} L{x:.1},{t:.1} L{r:.1},{b:.1} Z" fill="{FAULT_COLOUR}"><title>{label}: recovered</title></path>"#,
                top = frame.top,
                b = frame.bottom,
                t = frame.bottom - 7.0,
                l = x - 4.0,
                r = x + 4.0,
                label = escape(&fault.label),
            );
        }
    }
}

fn axes(svg: &mut String, frame: &Frame) {
    let right = frame.right();
    let y_step = nice_step(frame.y_max / 5.0);
    for i in 0..=(frame.y_max / y_step).round() as usize {
        let rate = i as f64 * y_step;
        let y = frame.y(rate);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#dee2e6"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{}</text>"##,
            tick_text(rate, y_step),
            tx = LEFT - 6.0,
            ty = y + 4.0,
        );
    }
    let x_step = nice_step(frame.x_max / 12.0);
    for i in 0..=(frame.x_max / x_step).floor() as usize {
        let secs = i as f64 * x_step;
        let x = frame.x(secs);
        let _ = write!(
            svg,
            r#"<line x1="{x:.1}" y1="{b}" x2="{x:.1}" y2="{tb}" stroke="black"/><text x="{x:.1}" y="{ty}" text-anchor="middle">{}</text>"#,
            tick_text(secs, x_step),
            b = frame.bottom,
            tb = frame.bottom + 5.0,
            ty = frame.bottom + 18.0,
        );
    }
    let _ = write!(
        svg,
        r#"<line x1="{LEFT}" y1="{b}" x2="{right}" y2="{b}" stroke="black"/><line x1="{LEFT}" y1="{t}" x2="{LEFT}" y2="{b}" stroke="black"/><text x="{xl}" y="{yl}" text-anchor="middle">seconds since start</text><text x="14" y="{ym}" text-anchor="middle" transform="rotate(-90 14 {ym})">messages handled / s</text>"#,
        b = frame.bottom,
        t = frame.top,
        xl = (LEFT + right) / 2.0,
        yl = frame.bottom + 38.0,
        ym = (frame.top + frame.bottom) / 2.0,
    );
}

fn lines(svg: &mut String, series: &[Series], frame: &Frame) {
    if series.iter().all(|s| s.points.is_empty()) {
        let _ = write!(
            svg,
            r##"<text x="{x}" y="{y}" text-anchor="middle" fill="#868e96">no throughput samples</text>"##,
            x = (LEFT + frame.right()) / 2.0,
            y = (frame.top + frame.bottom) / 2.0,
        );
        return;
    }
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .filter(|(t, rate)| t.is_finite() && rate.is_finite())
            .map(|&(t, rate)| format!("{:.1},{:.1}", frame.x(t), frame.y(rate)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round" points="{}"><title>{}</title></polyline>"#,
            colour(i),
            points.join(" "),
            escape(&s.name),
        );
    }
}

fn marker_labels(svg: &mut String, labels: &[Label], frame: &Frame) {
    for label in labels {
        let x = frame.x(label.at_secs);
        let baseline = TITLE_HEIGHT + (label.lane as f64 + 1.0) * LANE_HEIGHT - 4.0;
        let (text_x, _) = label_extent(&label.text, x);
        let colour = label.colour;
        // The load-end marker crosses the whole plot; a fault's line only reaches down to its
        // band, which marks the time itself.
        let line_end = if colour == MARKER_COLOUR {
            frame.bottom
        } else {
            frame.top
        };
        let _ = write!(
            svg,
            r#"<line x1="{x:.1}" y1="{y1:.1}" x2="{x:.1}" y2="{line_end:.1}" stroke="{colour}" stroke-width="1" stroke-dasharray="4 3"/><text x="{text_x:.1}" y="{baseline:.1}" fill="{colour}">{}</text>"#,
            escape(&label.text),
            y1 = baseline - FONT_SIZE + 2.0,
        );
    }
}

fn legend(svg: &mut String, series: &[Series], frame: &Frame) {
    let x = frame.right() + 20.0;
    for (i, s) in series.iter().enumerate() {
        let y = frame.top + 12.0 + i as f64 * 20.0;
        let _ = write!(
            svg,
            r#"<line x1="{x}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="{c}" stroke-width="3"/><text x="{tx}" y="{ty:.1}">{}</text>"#,
            escape(&s.name),
            c = colour(i),
            x2 = x + 18.0,
            tx = x + 24.0,
            ty = y + 4.0,
        );
    }
    // What the red marks mean, below the services: a reader should not have to guess.
    let y = frame.top + 12.0 + series.len() as f64 * 20.0 + 12.0;
    let _ = write!(
        svg,
        r#"<rect x="{x}" y="{rt:.1}" width="18" height="12" fill="{FAULT_COLOUR}" fill-opacity="0.13"/><text x="{tx}" y="{t1:.1}">fault</text><path d="M{l},{b2:.1} L{m},{p2:.1} L{r},{b2:.1} Z" fill="{FAULT_COLOUR}"/><text x="{tx}" y="{t2:.1}">recovered</text>"#,
        rt = y - 6.0,
        t1 = y + 4.0,
        tx = x + 24.0,
        l = x + 5.0,
        m = x + 9.0,
        r = x + 13.0,
        b2 = y + 24.0,
        p2 = y + 17.0,
        t2 = y + 24.0,
    );
}

fn colour(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

/// The y axis top: the highest rate rounded up to a whole tick, so the top tick is labelled.
fn rounded_maximum(series: &[Series]) -> f64 {
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(_, rate)| rate))
        .filter(|rate| rate.is_finite())
        .fold(0.0, f64::max);
    let max = positive_or_one(max);
    let step = nice_step(max / 5.0);
    (max / step).ceil() * step
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = positive_or_one(raw);
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|f| f * power)
        .find(|step| *step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * power)
}

/// A tick value with as many decimals as the step needs (0.5 s steps show "2.5", 10 s "20").
fn tick_text(value: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{value:.decimals$}")
}

fn positive_or_one(value: f64) -> f64 {
    if value.is_finite() && value > 0.0 {
        value
    } else {
        1.0
    }
}

/// Text for SVG content and attribute values: labels come from scenario files and may hold
/// any character.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab and newline are not allowed in XML 1.0 at all.
            c if c.is_control() && c != '\t' && c != '\n' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
