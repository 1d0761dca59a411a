//! The benches' SVG plots, drawn with plotters (SVG backend only: text goes out as `<text>`
//! elements, no font files or system libraries). Throughput: one horizontal bar per target.
//! Failover: per event (a backend killed, the owner's link cut), each stack's failed requests
//! over time around it, as a running count, with the event at 0 s.
use plotters::{
    coord::ranged1d::SegmentValue,
    element::{PathElement, Text},
    prelude::*,
    series::{Histogram, LineSeries},
    style::text_anchor::{HPos, Pos, VPos},
};

/// SVG font sizes in plotters units (the SVG backend writes `size / 1.24` pixels).
const TITLE: f64 = 24.0;
const CAPTION: f64 = 20.0;
const LABEL: f64 = 17.0;
const WIDTH: u32 = 1000;

/// One colour per stack or target, in order; readable on white and distinct in greyscale.
const COLOURS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x5f, 0xa8),
    RGBColor(0xc0, 0x39, 0x2b),
    RGBColor(0xe6, 0x7e, 0x22),
    RGBColor(0x2e, 0x8b, 0x57),
];

fn colour(k: usize) -> RGBColor {
    COLOURS[k % COLOURS.len()]
}

fn font(size: f64) -> TextStyle<'static> {
    ("sans-serif", size).into_font().into()
}

/// One horizontal bar per row (label, value, note), first row on top, the value and note
/// written after the bar; `x_desc` names the value axis (e.g. "requests/s").
pub fn bars(title: &str, x_desc: &str, rows: &[(String, f64, String)]) -> anyhow::Result<String> {
    let height = 150 + 60 * rows.len() as u32;
    // Row k is segment `last - k`: plotters counts segments from the bottom.
    let last = rows.len().max(1) as i32 - 1;
    let row = |segment: i32| {
        usize::try_from(last - segment)
            .ok()
            .and_then(|k| rows.get(k))
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let max = rows.iter().map(|r| r.1).fold(1.0, f64::max);
        let longest = rows.iter().map(|r| r.0.len()).max().unwrap_or(0) as u32;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, font(TITLE))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(30 + 9 * longest)
            // Room right of the longest bar for its value and note.
            .build_cartesian_2d(0.0..max * 1.75, (0..last).into_segmented())
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE.mix(0.0))
            .x_desc(x_desc)
            .x_labels(6)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_labels(rows.len())
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(k) => row(*k).map(|r| r.0.clone()).unwrap_or_default(),
                _ => String::new(),
            })
            .label_style(font(LABEL))
            .axis_desc_style(font(LABEL))
            .draw()
            .map_err(plot_error)?;
        for (k, (_, value, _)) in rows.iter().enumerate() {
            chart
                .draw_series(
                    Histogram::horizontal(&chart)
                        .style(colour(k).filled())
                        .margin(12)
                        .data([(last - k as i32, *value)]),
                )
                .map_err(plot_error)?;
        }
        let after_bar = font(LABEL).pos(Pos::new(HPos::Left, VPos::Center));
        chart
            .draw_series(rows.iter().enumerate().map(|(k, (_, value, note))| {
                EmptyElement::at((*value, SegmentValue::CenterOf(last - k as i32)))
                    + Text::new(format!("{value:.0} {note}"), (8, 0), after_bar.clone())
            }))
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// One stack's requests around an event: (seconds since the event, succeeded).
pub struct Series<'a> {
    pub label: String,
    pub points: &'a [(f64, bool)],
}

/// One panel: an event at 0 s, seconds `from..to` around it.
pub struct Panel<'a> {
    pub title: String,
    /// The x axis, e.g. "seconds since keystone was SIGKILLed".
    pub x_desc: String,
    pub from: f64,
    pub to: f64,
    pub series: Vec<Series<'a>>,
}

/// The failed requests of each series as a running count over `from..=to`: a step up at each
/// failure, flat while requests succeed.
fn running_failures(points: &[(f64, bool)], from: f64, to: f64) -> Vec<(f64, f64)> {
    let mut steps = vec![(from, 0.0)];
    let mut count = 0.0;
    for &(t, _) in points.iter().filter(|p| !p.1 && p.0 >= from && p.0 <= to) {
        steps.push((t, count));
        count += 1.0;
        steps.push((t, count));
    }
    steps.push((to, count));
    steps
}

/// The legend's words for one series: how many requests failed, and when the last one did.
fn summary(points: &[(f64, bool)], from: f64, to: f64) -> String {
    let failed: Vec<f64> = points
        .iter()
        .filter(|p| !p.1 && p.0 >= from && p.0 <= to)
        .map(|p| p.0)
        .collect();
    let total = points.iter().filter(|p| p.0 >= from && p.0 <= to).count();
    match failed.last() {
        None => format!("0 of {total} failed"),
        Some(last) => format!(
            "{} of {total} failed, last at {:.0} ms",
            failed.len(),
            last * 1000.0
        ),
    }
}

/// Panels stacked vertically under one title: per panel, each series' failed requests as a
/// running count over time, the event (0 s) marked by a dashed line.
pub fn failures(title: &str, panels: &[Panel<'_>]) -> anyhow::Result<String> {
    const PANEL: u32 = 380;
    let height = 60 + PANEL * panels.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let root = root.titled(title, font(TITLE)).map_err(plot_error)?;
        let areas = root.split_evenly((panels.len().max(1), 1));
        for (area, p) in areas.iter().zip(panels) {
            let most = p
                .series
                .iter()
                .map(|s| {
                    running_failures(s.points, p.from, p.to)
                        .last()
                        .map_or(0.0, |l| l.1)
                })
                .fold(0.0, f64::max);
            // Head room above the highest line for the legend.
            let top = (most * 1.6).max(4.0);
            let mut chart = ChartBuilder::on(area)
                .caption(&p.title, font(CAPTION))
                .margin(15)
                .margin_right(30)
                .x_label_area_size(55)
                .y_label_area_size(75)
                .build_cartesian_2d(p.from..p.to, 0.0..top)
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .x_desc(p.x_desc.as_str())
                .y_desc("failed requests (running count)")
                // Whole counts only: no label repeated on a short axis.
                .y_labels((top as usize).min(10) + 1)
                .x_label_formatter(&|v| format!("{v:.1}"))
                .y_label_formatter(&|v| format!("{v:.0}"))
                .label_style(font(LABEL))
                .axis_desc_style(font(LABEL))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(plot_error)?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    [(0.0, 0.0), (0.0, top)],
                    BLACK.mix(0.6).stroke_width(1),
                )))
                .map_err(plot_error)?;
            for (k, s) in p.series.iter().enumerate() {
                let style = colour(k).stroke_width(3);
                chart
                    .draw_series(LineSeries::new(
                        running_failures(s.points, p.from, p.to),
                        style,
                    ))
                    .map_err(plot_error)?
                    .label(format!("{}: {}", s.label, summary(s.points, p.from, p.to)))
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], style));
            }
            legend(&mut chart)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// Each series' values (one per trial) sorted and drawn over their rank, 0-100 % of the
/// trials, on a logarithmic axis: a stack's whole distribution as one line, its median at
/// 50 %. Values under 1 are drawn at 1 (the log axis has no 0).
pub fn distribution(
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<f64>)],
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let max = series
            .iter()
            .flat_map(|s| s.1.iter())
            .copied()
            .fold(10.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, font(TITLE))
            .margin(20)
            .margin_right(30)
            .x_label_area_size(55)
            .y_label_area_size(85)
            // Head room above the highest point for the legend.
            .build_cartesian_2d(0.0..100.0, (1.0..max * 30.0).log_scale())
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("trials at or below (%)")
            .y_desc(y_desc)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(font(LABEL))
            .axis_desc_style(font(LABEL))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_error)?;
        for (k, (label, values)) in series.iter().enumerate() {
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len().max(1) as f64;
            let points: Vec<(f64, f64)> = sorted
                .iter()
                .enumerate()
                .map(|(i, &v)| (100.0 * (i + 1) as f64 / n, v.max(1.0)))
                .collect();
            let style = colour(k).stroke_width(3);
            chart
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(plot_error)?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], style));
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 5, colour(k).filled())),
                )
                .map_err(plot_error)?;
        }
        legend(&mut chart)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// The series' legend, boxed, in the upper left corner.
fn legend<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(font(LABEL))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(plot_error)
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_show_the_title_axis_labels_and_values() {
        let rows = [
            (
                "direct to ctl1".to_owned(),
                10_500.0,
                "req/s (p50 2.80 ms)".to_owned(),
            ),
            (
                "vip-fabric VIP".to_owned(),
                11_400.0,
                "req/s (p50 2.60 ms)".to_owned(),
            ),
            (
                "HAProxy VIP".to_owned(),
                6_200.0,
                "req/s (p50 4.10 ms)".to_owned(),
            ),
        ];
        let svg = bars("wrk -c50 requests/s, 2 CPUs", "requests/s", &rows).unwrap();
        keep("bars.svg", &svg);
        for text in [
            "wrk -c50 requests/s, 2 CPUs",
            "requests/s",
            "direct to ctl1",
            "vip-fabric VIP",
            "HAProxy VIP",
            "11400 req/s (p50 2.60 ms)",
        ] {
            assert!(svg.contains(text), "{text:?} missing from\n{svg}");
        }
        // First row on top: its label is drawn above the others.
        let y_of = |label: &str| {
            let at = svg.find(&format!(">\n{label}\n")).unwrap();
            attr_values(&svg[svg[..at].rfind("<text").unwrap()..], "<text", "y")[0]
        };
        assert!(y_of("direct to ctl1") < y_of("vip-fabric VIP"));
        assert!(y_of("vip-fabric VIP") < y_of("HAProxy VIP"));
        // Every text starts inside the picture.
        for x in attr_values(&svg, "<text", "x") {
            assert!((0.0..f64::from(WIDTH)).contains(&x), "text at x={x}");
        }
    }

    #[test]
    fn failure_panels_show_each_stack_and_its_result() {
        // A request every 15 ms from -0.9 s. The kill: vip-fabric fails 4 (every 7th in the
        // first 400 ms), HAProxy 10 (every 20th for 3 s), a third stack none. The cut: every
        // request fails for 345 ms (vip-fabric) and for 3.2 s (HAProxy).
        let mut kill = [Vec::new(), Vec::new(), Vec::new()];
        let mut cut = [Vec::new(), Vec::new(), Vec::new()];
        for i in -60..300 {
            let t = f64::from(i) * 0.015;
            kill[0].push((t, !(0.0..0.4).contains(&t) || i % 7 != 0));
            kill[1].push((t, !(0.0..3.0).contains(&t) || i % 20 != 0));
            kill[2].push((t, true));
            cut[0].push((t, !(0.0..0.35).contains(&t)));
            cut[1].push((t, !(0.0..3.2).contains(&t)));
            cut[2].push((t, true));
        }
        fn panel<'a>(title: &str, x_desc: &str, points: &'a [Vec<(f64, bool)>]) -> Panel<'a> {
            let labels = [
                "vip-fabric",
                "HAProxy inter 2000 fall 5 / VRRPv2 advert 1 s",
                "HAProxy inter 100 fall 2 / VRRPv3 advert 0.1 s",
            ];
            Panel {
                title: title.to_owned(),
                x_desc: x_desc.to_owned(),
                from: -1.0,
                to: 4.0,
                series: labels
                    .iter()
                    .zip(points)
                    .map(|(label, points)| Series {
                        label: (*label).to_owned(),
                        points,
                    })
                    .collect(),
            }
        }
        let svg = failures(
            "failed new connections, 2 CPUs",
            &[
                panel(
                    "keystone SIGKILLed on ctl2",
                    "seconds since the SIGKILL",
                    &kill,
                )
                .out_after(&["412", "10236", "612"]),
                panel("ctl1's link cut", "seconds since the cut", &cut),
            ],
        )
        .unwrap();
        keep("failures.svg", &svg);
        for text in [
            "failed new connections, 2 CPUs",
            "keystone SIGKILLed on ctl2",
            "ctl1&apos;s link cut",
            "seconds since the SIGKILL",
            "seconds since the cut",
            "failed requests (running count)",
            "vip-fabric (out after 412 ms): 4 of 327 failed, last at 315 ms",
            "HAProxy inter 2000 fall 5 / VRRPv2 advert 1 s (out after 10236 ms): 10 of 327 \
             failed, last at 2700 ms",
            "HAProxy inter 100 fall 2 / VRRPv3 advert 0.1 s (out after 612 ms): 0 of 327 failed",
            "vip-fabric: 24 of 327 failed, last at 345 ms",
            "HAProxy inter 2000 fall 5 / VRRPv2 advert 1 s: 214 of 327 failed, last at 3195 ms",
        ] {
            assert!(svg.contains(text), "{text:?} missing from\n{svg}");
        }
        // Each panel: a line per stack, and its sample in the legend.
        assert_eq!(
            svg.matches("stroke-width=\"3\" points").count(),
            2 * (3 + 3)
        );
        for y in attr_values(&svg, "<text", "y") {
            assert!((0.0..f64::from(60 + 2 * 380)).contains(&y), "text at y={y}");
        }
    }

    #[test]
    fn distribution_draws_every_trial_of_every_stack_with_its_legend() {
        let series = [
            (
                "vip-fabric: p50 60 ms, p99 95 ms".to_owned(),
                vec![55.0, 60.0, 95.0, 0.0],
            ),
            (
                "tuned keepalived: p50 300 ms".to_owned(),
                vec![290.0, 300.0, 310.0, 420.0],
            ),
        ];
        let svg =
            distribution("owner lost: time to answer again, 4 trials", "ms", &series).unwrap();
        keep("distribution.svg", &svg);
        for text in [
            "owner lost: time to answer again, 4 trials",
            "trials at or below (%)",
            "vip-fabric: p50 60 ms, p99 95 ms",
            "tuned keepalived: p50 300 ms",
        ] {
            assert!(svg.contains(text), "{text:?} missing from\n{svg}");
        }
        // One dot per trial per stack.
        assert_eq!(svg.matches("<circle").count(), 8);
        for y in attr_values(&svg, "<text", "y") {
            assert!((0.0..560.0).contains(&y), "text at y={y}");
        }
    }

    impl Panel<'_> {
        /// What the failover report adds to the kill's labels.
        fn out_after(mut self, ms: &[&str]) -> Self {
            for (s, ms) in self.series.iter_mut().zip(ms) {
                s.label += &format!(" (out after {ms} ms)");
            }
            self
        }
    }

    /// With `VIP_PLOT_SAMPLE_DIR` set, the tests' plots are written there to be looked at.
    fn keep(name: &str, svg: &str) {
        if let Some(dir) = std::env::var_os("VIP_PLOT_SAMPLE_DIR") {
            std::fs::write(std::path::Path::new(&dir).join(name), svg).unwrap();
        }
    }

    /// The numeric values of attribute `attr` in the tags starting with `tag`.
    fn attr_values(svg: &str, tag: &str, attr: &str) -> Vec<f64> {
        svg.split(tag)
            .skip(1)
            .filter_map(|t| {
                let v = t.split(&format!(" {attr}=\"")).nth(1)?;
                v.split('"').next()?.parse().ok()
            })
            .collect()
    }
}
