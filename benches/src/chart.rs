//! The benchmark's chart: server CPU time per forwarded packet against fan-out, one line per
//! server and SRTP profile, written as a self-contained SVG (hand-written: one line chart does
//! not justify a plotting library's dependencies).
//!
//! Both axes are logarithmic: fan-outs span 1 to hundreds, and CPU per packet spans the fixed
//! cost of an almost idle server (hundreds of µs per packet at fan-out 1) down to the marginal
//! cost of one more copy (a few µs).

use std::collections::BTreeMap;
use std::fmt::Write;

/// One line of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (fan-out, µs per packet), in fan-out order.
    pub points: Vec<(f64, f64)>,
    /// Loss at each point (0..1), same order: a point with loss is drawn hollow and labelled,
    /// since its CPU figure then counts work on packets that never arrived.
    pub losses: Vec<f64>,
}

/// Loss above which a point is marked as lossy.
const LOSSY: f64 = 0.01;

const WIDTH: f64 = 760.0;
const PLOT_HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
/// Below the plot: axis labels, then one legend line per series.
const BOTTOM: f64 = 64.0;
const LEGEND_LINE: f64 = 18.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The broadcast records of a JSON Lines file as series: one per (server, profile), the
/// latest record for each fan-out.
pub fn series_from_records(jsonl: &str) -> Vec<Series> {
    let mut lines: BTreeMap<String, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
    for v in jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        if v["scenario"] != "broadcast" {
            continue;
        }
        let (Some(server), Some(profile), Some(fanout), Some(us)) = (
            v["server"].as_str(),
            v["profile"].as_str(),
            v["fanout"].as_u64(),
            v["server_cpu_us_per_forwarded"].as_f64(),
        ) else {
            continue;
        };
        if us <= 0.0 {
            continue;
        }
        let profile = match profile {
            "sha1" => "AES_CM_128_HMAC_SHA1_80",
            "gcm" => "AEAD_AES_128_GCM",
            other => other,
        };
        let loss = v["loss"].as_f64().unwrap_or(0.0);
        let feedback = if v["quality"] == true {
            ", browser feedback and simulcast"
        } else if v["feedback"] == true {
            ", browser feedback"
        } else {
            ""
        };
        // Records from before the topology was a choice (all on the shared one) say nothing.
        let topology = match v["topology"].as_str() {
            Some("split") => ", split receive",
            Some("shared") => ", shared receive",
            _ => "",
        };
        let cores = match v["server_cores"].as_u64() {
            Some(n) if n > 1 => format!(", {n} cores"),
            _ => String::new(),
        };
        lines
            .entry(format!("{server}, {profile}{feedback}{topology}{cores}"))
            .or_default()
            .insert(fanout, (us, loss));
    }
    lines
        .into_iter()
        .map(|(name, points)| Series {
            name,
            losses: points.values().map(|(_, loss)| *loss).collect(),
            points: points
                .into_iter()
                .map(|(f, (us, _))| (f as f64, us))
                .collect(),
        })
        .collect()
}

/// Values 1, 2 and 5 × 10^k between `lo` and `hi`.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let t = m * decade;
            if t >= lo * (1.0 - 1e-9) && t <= hi * (1.0 + 1e-9) {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    ticks
}

fn label(v: f64) -> String {
    if v < 1.0 {
        format!("{v}")
    } else {
        format!("{v:.0}")
    }
}

/// The chart as SVG text.
pub fn svg(title: &str, series: &[Series]) -> String {
    let all = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.0 > 0.0 && p.1 > 0.0);
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max).max(10.0);
    let y_max = all.clone().map(|p| p.1).fold(f64::MIN_POSITIVE, f64::max);
    let y_min = all.map(|p| p.1).fold(f64::MAX, f64::min).min(y_max);
    // Whole 1-2-5 steps around the data, at least one decade.
    let y_lo = 10f64.powf((y_min.max(1e-3).log10() - 0.05).floor());
    let y_hi = 10f64
        .powf((y_max.max(1e-3).log10() + 0.05).ceil())
        .max(y_lo * 10.0);
    let decades = x_max.log10().ceil().max(1.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = PLOT_HEIGHT;
    let height = TOP + PLOT_HEIGHT + BOTTOM + LEGEND_LINE * series.len() as f64;
    let x = |v: f64| LEFT + v.max(1.0).log10() / decades * plot_w;
    let y = |v: f64| {
        let f = (v.clamp(y_lo, y_hi).log10() - y_lo.log10()) / (y_hi.log10() - y_lo.log10());
        TOP + plot_h - f * plot_h
    };

    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Axes, grid and ticks.
    for t in log_ticks(y_lo, y_hi) {
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            y(t),
            LEFT + plot_w,
            LEFT - 6.0,
            y(t) + 4.0,
            label(t)
        );
    }
    for d in 0..=decades as u32 {
        let v = 10f64.powi(d as i32);
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1:.1}" stroke="#ddd"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle">{3}</text>"##,
            x(v),
            TOP + plot_h,
            TOP + plot_h + 16.0,
            v
        );
    }
    let _ = writeln!(
        out,
        r#"<path d="M{LEFT},{TOP} V{0:.1} H{1:.1}" fill="none" stroke="black"/>"#,
        TOP + plot_h,
        LEFT + plot_w
    );
    let _ = writeln!(
        out,
        r#"<text x="{0:.1}" y="{1:.1}" text-anchor="middle">subscribers per stream (fan-out, log scale)</text>"#,
        LEFT + plot_w / 2.0,
        TOP + plot_h + 34.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(18 {0:.1}) rotate(-90)" text-anchor="middle">server CPU µs per forwarded packet (log scale)</text>"#,
        TOP + plot_h / 2.0
    );
    // Lines, points, legend.
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            points.join(" ")
        );
        for (k, p) in s.points.iter().enumerate() {
            let loss = s.losses.get(k).copied().unwrap_or(0.0);
            let fill = if loss > LOSSY { "white" } else { colour };
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{fill}" stroke="{colour}" stroke-width="1.5"><title>{} at {}: {:.2} µs, {:.1}% lost</title></circle>"#,
                x(p.0),
                y(p.1),
                escape(&s.name),
                p.0,
                p.1,
                loss * 100.0
            );
            if loss > LOSSY {
                let _ = writeln!(
                    out,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{colour}">{:.0}% lost</text>"#,
                    x(p.0) - 6.0,
                    y(p.1) - 6.0,
                    loss * 100.0
                );
            }
        }
        let ly = TOP + plot_h + BOTTOM - 8.0 + LEGEND_LINE * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{LEFT}" y1="{ly:.1}" x2="{0}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"/><text x="{1}" y="{2:.1}">{3}</text>"#,
            LEFT + 24.0,
            LEFT + 30.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every opened element is closed in order (the shape of well-formed XML this file emits:
    /// no comments, CDATA or processing instructions).
    fn well_formed(svg: &str) -> bool {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>') else {
                return false;
            };
            let tag = &rest[open + 1..open + close];
            rest = &rest[open + close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name.trim()) {
                    return false;
                }
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap_or("").to_owned());
            }
            if tag.contains('<') {
                return false;
            }
        }
        stack.is_empty() && !rest.contains('>')
    }

    #[test]
    fn chart_is_well_formed_svg() {
        let jsonl = r#"{"scenario":"broadcast","server":"Janus <1.1.2> & co","profile":"sha1","fanout":1,"server_cpu_us_per_forwarded":40.0}
{"scenario":"broadcast","server":"Janus <1.1.2> & co","profile":"sha1","fanout":100,"server_cpu_us_per_forwarded":9.5,"loss":0.5}
{"scenario":"broadcast","server":"webrtc.ai relay","profile":"gcm","fanout":10,"server_cpu_us_per_forwarded":2.0}
{"scenario":"conference","server":"webrtc.ai relay","profile":"gcm","fanout":4,"server_cpu_us_per_forwarded":3.0}
not json
"#;
        let series = series_from_records(jsonl);
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0].name,
            "Janus <1.1.2> & co, AES_CM_128_HMAC_SHA1_80"
        );
        assert_eq!(series[0].points, vec![(1.0, 40.0), (100.0, 9.5)]);
        assert_eq!(series[0].losses, vec![0.0, 0.5]);
        let svg = svg("CPU per forwarded packet", &series);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(well_formed(&svg), "{svg}");
        assert!(svg.contains("Janus &lt;1.1.2&gt; &amp; co"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("50% lost</text>").count(), 1);
        assert!(well_formed(&super::svg("empty", &[])));
        assert!(!well_formed("<svg><g></svg></g>"));
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(
            log_ticks(1.0, 100.0),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        assert_eq!(log_ticks(3.0, 30.0), vec![5.0, 10.0, 20.0]);
        assert_eq!(label(0.5), "0.5");
        assert_eq!(label(200.0), "200");
    }
}
