//! Hand-written SVG plots (no plotting dependency): horizontal bars for throughput, and
//! request timelines (one row per stack, a tick per request, red when it failed) for failover.
use std::fmt::Write as _;

const WIDTH: f64 = 900.0;
const LEFT: f64 = 260.0;
const ROW: f64 = 34.0;

fn header(height: f64, title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"16\" font-weight=\"bold\">{}</text>\n",
        escape(title)
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One bar per (label, value, note), scaled to the largest value.
pub fn bars(title: &str, unit: &str, rows: &[(String, f64, String)]) -> String {
    let height = 60.0 + ROW * rows.len() as f64 + 20.0;
    let mut s = header(height, title);
    let max = rows.iter().map(|r| r.1).fold(1.0, f64::max);
    let span = WIDTH - LEFT - 220.0;
    for (k, (label, value, note)) in rows.iter().enumerate() {
        let y = 45.0 + ROW * k as f64;
        let w = span * value / max;
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{ty}\">{label}</text><rect x=\"{LEFT}\" y=\"{y}\" width=\"{w:.1}\" height=\"22\" fill=\"#4a7fb5\"/>\
             <text x=\"{tx:.1}\" y=\"{ty}\">{value:.0} {unit} {note}</text>",
            ty = y + 16.0,
            tx = LEFT + w + 6.0,
            label = escape(label),
            note = escape(note),
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A panel of request timelines: each row (label, points of (seconds since the event, ok)),
/// x from `from` to `to` seconds, the event at 0 marked.
pub struct Timeline<'a> {
    pub title: &'a str,
    pub from: f64,
    pub to: f64,
    pub rows: Vec<(String, &'a [(f64, bool)])>,
}

/// Stacks panels vertically into one SVG.
pub fn timelines(title: &str, panels: &[Timeline<'_>]) -> String {
    let panel_height = |p: &Timeline<'_>| 50.0 + ROW * p.rows.len() as f64;
    let height = 40.0 + panels.iter().map(panel_height).sum::<f64>();
    let mut s = header(height, title);
    let mut top = 40.0;
    for p in panels {
        let span = WIDTH - LEFT - 20.0;
        let x = |t: f64| LEFT + span * (t.clamp(p.from, p.to) - p.from) / (p.to - p.from);
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{}</text>",
            top + 14.0,
            escape(p.title)
        );
        let bottom = top + 24.0 + ROW * p.rows.len() as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{x0:.1}\" y1=\"{}\" x2=\"{x0:.1}\" y2=\"{bottom}\" stroke=\"black\" stroke-dasharray=\"4 3\"/>",
            top + 20.0,
            x0 = x(0.0)
        );
        for (k, (label, points)) in p.rows.iter().enumerate() {
            let y = top + 24.0 + ROW * k as f64;
            let _ = writeln!(
                s,
                "<text x=\"10\" y=\"{}\">{}</text>",
                y + 16.0,
                escape(label)
            );
            // Successes first, failures drawn over them.
            for ok in [true, false] {
                let (colour, h) = if ok {
                    ("#6ab04c", 10.0)
                } else {
                    ("#d63031", 22.0)
                };
                for &(t, _) in points
                    .iter()
                    .filter(|pt| pt.1 == ok && pt.0 >= p.from && pt.0 <= p.to)
                {
                    let _ = writeln!(
                        s,
                        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"1.5\" height=\"{h}\" fill=\"{colour}\"/>",
                        x(t),
                        y + (22.0 - h) / 2.0
                    );
                }
            }
        }
        // Axis: a tick every second.
        let mut t = p.from.ceil();
        while t <= p.to {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{t:.0}s</text>",
                x(t),
                bottom + 12.0
            );
            t += if p.to - p.from > 12.0 { 2.0 } else { 1.0 };
        }
        top = bottom + 26.0;
    }
    s.push_str("</svg>\n");
    s
}
