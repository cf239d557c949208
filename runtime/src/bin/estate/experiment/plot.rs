//! PNG figures shaped like Fig. 4 and Fig. 5 of the E-State paper (NetSoft 2016).
//!
//! * [`fig4`]: scale-out (top row) and scale-in (bottom row) runs of the IDS; left column the match counters of NF.1
//!   and NF.2 over time, right column the overall packets/s over time, each for the baseline and for E-State, with a
//!   dashed vertical line where the flows were moved.
//! * [`fig5`]: left the packets/s per instance and overall against the number of instances, right the average global
//!   state request delay against the number of instances, one colour per system, both on logarithmic y axes.
//!
//! Text is rendered with DejaVu Sans, read from [`FONT_PATH`] (Debian package `fonts-dejavu-core`).

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Font file used for all text in the figures.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

const FONT_FAMILY: &str = "sans-serif";
const FIG4_WIDTH: u32 = 1400;
const FIG4_ROW_HEIGHT: u32 = 500;
const FIG5_SIZE: (u32, u32) = (1400, 550);

const TITLE_SIZE: u32 = 22;
const AXIS_DESC_SIZE: u32 = 17;
const TICK_LABEL_SIZE: u32 = 14;
const LEGEND_SIZE: u32 = 15;
const CHART_MARGIN: u32 = 12;
const X_LABEL_AREA: u32 = 50;
const Y_LABEL_AREA: u32 = 75;
/// Colour of the dashed "flows moved" line, chosen to differ from every system colour and shade.
const MOVE_COLOR: RGBColor = RGBColor(190, 40, 160);
const LEGEND_SAMPLE_AREA: u32 = 34;
const LEGEND_MARGIN: u32 = 6;
const LINE_WIDTH: u32 = 2;

/// Smallest value shown on a logarithmic axis; non-positive values are not drawn there.
const LOG_FLOOR: f64 = 1e-9;
/// Known systems, in legend order.
const SYSTEMS: [&str; 4] = ["baseline", "centralmem", "clustermem", "estate"];
/// Known Fig. 4 cases, in row order.
const CASES: [&str; 2] = ["scale-out", "scale-in"];

/// One instant of a Fig. 4 run.
#[derive(Clone, Debug)]
pub struct Fig4Sample {
    /// Seconds since the traffic started.
    pub t_s: f64,
    /// Match counter of NF.1 and NF.2 at that instant (the sum of the per-flow match counters each instance holds).
    pub matches: [i64; 2],
    /// Overall packets/s of both instances over the interval ending at `t_s`.
    pub pps: f64,
}

/// One run of Fig. 4: one case (`"scale-out"` or `"scale-in"`), one system (`"baseline"` or `"estate"`).
#[derive(Clone, Debug)]
pub struct Fig4Series {
    /// `"scale-out"` or `"scale-in"` (any other case gets a row of its own below these).
    pub case: String,
    /// `"baseline"` or `"estate"` (the colours also know `"centralmem"` and `"clustermem"`).
    pub system: String,
    /// When the flows were moved (seconds since the traffic started).
    pub move_at_s: f64,
    /// Samples of the run, in any order.
    pub samples: Vec<Fig4Sample>,
}

/// One point of Fig. 5 (medians over repetitions).
#[derive(Clone, Debug)]
pub struct Fig5Point {
    /// `"baseline"`, `"centralmem"`, `"clustermem"` or `"estate"`.
    pub system: String,
    /// Number of VNF instances.
    pub instances: usize,
    /// Packets/s processed by one instance.
    pub pps_per_instance: f64,
    /// Packets/s processed by all instances together.
    pub pps_overall: f64,
    /// Average global state request delay in milliseconds; `None` where the system made no global request
    /// (the baseline).
    pub global_delay_ms: Option<f64>,
}

/// Draws Fig. 4 into `out` (PNG): two rows (scale-out on top, scale-in below, each row only if series for it exist),
/// two columns: left: match counter of NF.1 and NF.2 over time for each system (estate solid, baseline dashed; NF.1 in
/// the system's colour, NF.2 in a lighter shade of it), right: overall packets/s over time for each system. A dashed
/// vertical line at `move_at_s` in every panel.
///
/// The image is 1400 px wide and 500 px high per row. Samples with a non-finite time or value are skipped.
pub fn fig4(series: &[Fig4Series], out: &Path) -> Result<(), String> {
    register_font()?;
    if series.iter().all(|s| s.samples.is_empty()) {
        return Err("fig4: nothing to draw (no series with samples)".to_string());
    }
    let cases = fig4_cases(series);
    let rows = u32::try_from(cases.len()).map_err(|e| e.to_string())?;
    let root = BitMapBackend::new(out, (FIG4_WIDTH, FIG4_ROW_HEIGHT * rows)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((cases.len(), 2));
    for (case, row) in cases.iter().zip(areas.chunks(2)) {
        let mut runs: Vec<&Fig4Series> = series.iter().filter(|s| &s.case == case).collect();
        runs.sort_by_key(|s| system_rank(&s.system));
        let (left, right) = fig4_panels(case, &runs);
        draw_panel(&row[0], &left)?;
        draw_panel(&row[1], &right)?;
    }
    root.present().map_err(|e| format!("fig4: cannot write {}: {e}", out.display()))
}

/// Draws Fig. 5 into `out` (PNG): left: packets/s per instance (solid) and overall (dashed) against the number of
/// instances, one colour per system, logarithmic y axis (the systems differ by 10-100x); right: average global request
/// delay (ms) against the number of instances for the systems that have one, log y axis.
///
/// The image is 1400x550 px. Points that are not finite or not positive cannot be shown on a log axis and are skipped.
pub fn fig5(points: &[Fig5Point], out: &Path) -> Result<(), String> {
    register_font()?;
    if points.is_empty() {
        return Err("fig5: nothing to draw (no points)".to_string());
    }
    let mut systems: Vec<&str> = Vec::new();
    for p in points {
        if !systems.contains(&p.system.as_str()) {
            systems.push(&p.system);
        }
    }
    systems.sort_by_key(|s| system_rank(s));

    let mut pps =
        Panel::new("Packets/s per instance (solid) and overall (dashed)", "instances", "packets/s", Scale::Log);
    let mut delay = Panel::new("Average global state request delay", "instances", "delay (ms)", Scale::Log);
    pps.integer_x = true;
    delay.integer_x = true;
    delay.empty_note = "no system made global state requests";
    for system in systems {
        let mut own: Vec<&Fig5Point> = points.iter().filter(|p| p.system == system).collect();
        own.sort_by_key(|p| p.instances);
        let color = system_color(system);
        let along = |value: fn(&Fig5Point) -> Option<f64>| -> Vec<(f64, f64)> {
            own.iter().filter_map(|p| value(p).map(|v| (p.instances as f64, v))).collect()
        };
        pps.lines.push(Line::new(format!("{system} per instance"), color, false, along(|p| Some(p.pps_per_instance))));
        pps.lines.push(Line::new(format!("{system} overall"), color, true, along(|p| Some(p.pps_overall))));
        let delays = along(|p| p.global_delay_ms);
        if !delays.is_empty() {
            delay.lines.push(Line::new(system.to_string(), color, false, delays));
        }
    }
    for line in pps.lines.iter_mut().chain(delay.lines.iter_mut()) {
        line.markers = true;
    }
    delay.x_hint = points.iter().map(|p| p.instances as f64).collect();

    let root = BitMapBackend::new(out, FIG5_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((1, 2));
    draw_panel(&areas[0], &pps)?;
    draw_panel(&areas[1], &delay)?;
    root.present().map_err(|e| format!("fig5: cannot write {}: {e}", out.display()))
}

/// Reads DejaVu Sans once (kept for the rest of the process) and registers it as `"sans-serif"`.
fn register_font() -> Result<(), String> {
    static FONT: OnceLock<&'static [u8]> = OnceLock::new();
    let bytes = match FONT.get() {
        Some(bytes) => *bytes,
        None => {
            let data = std::fs::read(FONT_PATH).map_err(|e| {
                format!("cannot read font file {FONT_PATH}: {e} (install the Debian package fonts-dejavu-core)")
            })?;
            *FONT.get_or_init(|| Box::leak(data.into_boxed_slice()))
        }
    };
    plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| format!("{FONT_PATH} is not a usable font (reinstall the Debian package fonts-dejavu-core)"))
}

/// Cases that get a row: the known ones first, in paper order, then any others in order of appearance.
fn fig4_cases(series: &[Fig4Series]) -> Vec<String> {
    let mut cases: Vec<String> =
        CASES.iter().filter(|c| series.iter().any(|s| s.case == **c)).map(|c| c.to_string()).collect();
    for s in series {
        if !cases.contains(&s.case) {
            cases.push(s.case.clone());
        }
    }
    cases
}

/// The match-counter panel and the packets/s panel of one Fig. 4 row.
fn fig4_panels(case: &str, runs: &[&Fig4Series]) -> (Panel, Panel) {
    let name = capitalise(case);
    let mut matches =
        Panel::new(&format!("{name}: match counter of NF.1 and NF.2"), "time (s)", "match counter", Scale::Linear);
    let mut pps = Panel::new(&format!("{name}: overall packets/s"), "time (s)", "packets/s", Scale::Linear);
    for run in runs {
        let dashed = run.system == "baseline";
        let color = system_color(&run.system);
        for (nf, nf_color) in [color, lighten(color)].into_iter().enumerate() {
            let points = run.samples.iter().map(|s| (s.t_s, s.matches[nf] as f64)).collect();
            matches.lines.push(Line::new(format!("{} NF.{}", run.system, nf + 1), nf_color, dashed, points));
        }
        let points = run.samples.iter().map(|s| (s.t_s, s.pps)).collect();
        pps.lines.push(Line::new(run.system.clone(), color, dashed, points));
        for panel in [&mut matches, &mut pps] {
            if run.move_at_s.is_finite() && !panel.vlines.iter().any(|x| (x - run.move_at_s).abs() < 1e-9) {
                panel.vlines.push(run.move_at_s);
            }
        }
    }
    (matches, pps)
}

/// Kind of y axis.
#[derive(Clone, Copy, PartialEq)]
enum Scale {
    Linear,
    Log,
}

/// One curve of a panel.
struct Line {
    label: String,
    color: RGBColor,
    dashed: bool,
    markers: bool,
    points: Vec<(f64, f64)>,
}

impl Line {
    fn new(label: String, color: RGBColor, dashed: bool, points: Vec<(f64, f64)>) -> Self {
        Self { label, color, dashed, markers: false, points }
    }

    fn style(&self) -> ShapeStyle {
        ShapeStyle { color: self.color.to_rgba(), filled: false, stroke_width: LINE_WIDTH }
    }
}

/// Everything one panel shows.
struct Panel {
    title: String,
    x_desc: &'static str,
    y_desc: &'static str,
    scale: Scale,
    /// Label only whole numbers on the x axis.
    integer_x: bool,
    lines: Vec<Line>,
    /// x positions of dashed vertical "flows moved" markers.
    vlines: Vec<f64>,
    /// Further x values the axis must cover (so panels side by side share their x range).
    x_hint: Vec<f64>,
    /// Shown instead of curves when no line has a drawable point.
    empty_note: &'static str,
}

impl Panel {
    fn new(title: &str, x_desc: &'static str, y_desc: &'static str, scale: Scale) -> Self {
        Self {
            title: title.to_string(),
            x_desc,
            y_desc,
            scale,
            integer_x: false,
            lines: Vec::new(),
            vlines: Vec::new(),
            x_hint: Vec::new(),
            empty_note: "no data",
        }
    }

    /// The panel with every point that cannot be drawn removed, lines sorted by x, empty lines dropped.
    fn drawable_lines(&self) -> Vec<Line> {
        self.lines
            .iter()
            .map(|line| {
                let mut points: Vec<(f64, f64)> = line
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite() && (self.scale == Scale::Linear || *y > LOG_FLOOR))
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Line { label: line.label.clone(), points, ..*line }
            })
            .filter(|line| !line.points.is_empty())
            .collect()
    }
}

/// Data-to-axis transform of a y scale (identity or log10), used for range and legend layout.
fn to_axis(scale: Scale, y: f64) -> f64 {
    match scale {
        Scale::Linear => y,
        Scale::Log => y.log10(),
    }
}

fn from_axis(scale: Scale, t: f64) -> f64 {
    match scale {
        Scale::Linear => t,
        Scale::Log => 10f64.powf(t),
    }
}

/// Where the legend goes and the y range (in data units) that keeps it off the curves.
struct Layout {
    x: Range<f64>,
    y: Range<f64>,
    legend: SeriesLabelPosition,
}

/// Draws one panel: axes, grid, curves, vertical markers and legend.
fn draw_panel(area: &DrawingArea<BitMapBackend<'_>, Shift>, panel: &Panel) -> Result<(), String> {
    let lines = panel.drawable_lines();
    let layout = layout(area, panel, &lines);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, (FONT_FAMILY, TITLE_SIZE))
        .margin(CHART_MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA);
    match panel.scale {
        Scale::Linear => {
            let chart = builder.build_cartesian_2d(layout.x.clone(), layout.y.clone()).map_err(|e| e.to_string())?;
            fill_chart(chart, panel, &lines, layout)
        }
        Scale::Log => {
            let y = (layout.y.start..layout.y.end).log_scale();
            let chart = builder.build_cartesian_2d(layout.x.clone(), y).map_err(|e| e.to_string())?;
            fill_chart(chart, panel, &lines, layout)
        }
    }
}

/// Draws mesh, curves, markers and legend into a chart whose y axis is linear or logarithmic.
fn fill_chart<'a, Y>(
    mut chart: ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    panel: &Panel,
    lines: &[Line],
    layout: Layout,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let x_fmt = |x: &f64| if panel.integer_x { integer_label(*x) } else { number_label(*x) };
    let y_fmt = |y: &f64| number_label(*y);
    chart
        .configure_mesh()
        .x_desc(panel.x_desc)
        .y_desc(panel.y_desc)
        .x_labels(if panel.integer_x { 16 } else { 10 })
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .axis_desc_style((FONT_FAMILY, AXIS_DESC_SIZE))
        .label_style((FONT_FAMILY, TICK_LABEL_SIZE))
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(|e| e.to_string())?;

    for line in lines {
        draw_line(&mut chart, line)?;
    }
    let marker = ShapeStyle { color: MOVE_COLOR.to_rgba(), filled: false, stroke_width: LINE_WIDTH };
    for (i, x) in panel.vlines.iter().enumerate() {
        let points = [(*x, layout.y.start), (*x, layout.y.end)];
        let anno = chart.draw_series(DashedLineSeries::new(points, 5, 5, marker)).map_err(|e| e.to_string())?;
        if i == 0 {
            anno.label("flows moved").legend(move |(x, y)| DashedPathElement::new([(x, y), (x + 24, y)], 4, 4, marker));
        }
    }
    if lines.is_empty() {
        let centre = ((layout.x.start + layout.x.end) / 2.0, from_axis(panel.scale, mid_axis(panel.scale, &layout.y)));
        let style = TextStyle::from((FONT_FAMILY, AXIS_DESC_SIZE).into_font())
            .color(&RGBColor(120, 120, 120))
            .pos(Pos::new(HPos::Center, VPos::Center));
        chart.plotting_area().draw(&Text::new(panel.empty_note, centre, style)).map_err(|e| e.to_string())?;
    }
    if !lines.is_empty() || !panel.vlines.is_empty() {
        chart
            .configure_series_labels()
            .position(layout.legend)
            .background_style(WHITE.filled())
            .border_style(BLACK)
            .label_font((FONT_FAMILY, LEGEND_SIZE))
            .legend_area_size(LEGEND_SAMPLE_AREA)
            .margin(LEGEND_MARGIN)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Draws one curve (solid or dashed, optionally with point markers) and registers its legend entry.
fn draw_line<'a, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    line: &Line,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64>,
{
    let style = line.style();
    let points = line.points.iter().copied();
    let anno = if line.dashed {
        chart.draw_series(DashedLineSeries::new(points, 10, 6, style)).map_err(|e| e.to_string())?
    } else {
        chart.draw_series(LineSeries::new(points, style)).map_err(|e| e.to_string())?
    };
    anno.label(&line.label);
    if line.dashed {
        anno.legend(move |(x, y)| DashedPathElement::new([(x, y), (x + 24, y)], 6, 4, style));
    } else {
        anno.legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], style));
    }
    // A lone point would be invisible without a marker.
    if line.markers || line.points.len() == 1 {
        let marker = if line.dashed { style } else { style.filled() };
        let circles = line.points.iter().map(|p| Circle::new(*p, 4, marker));
        chart.draw_series(circles).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn mid_axis(scale: Scale, y: &Range<f64>) -> f64 {
    (to_axis(scale, y.start) + to_axis(scale, y.end)) / 2.0
}

/// Chooses axis ranges and puts the legend into the upper corner where it needs the least extra headroom.
fn layout(area: &DrawingArea<BitMapBackend<'_>, Shift>, panel: &Panel, lines: &[Line]) -> Layout {
    // All finite x values count, also those whose y cannot be drawn, so the axis still shows where the data is.
    let xs = panel
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .chain(panel.vlines.iter().copied())
        .chain(panel.x_hint.iter().copied());
    let x = padded(min_max(xs), if panel.integer_x { 0.5 } else { 0.0 });
    let (lo, hi) = y_data_range(panel.scale, lines);

    // Fractions of the plotting area the legend box covers, estimated from the text sizes.
    let (area_w, area_h) = area.dim_in_pixel();
    let plot_w = f64::from(area_w.saturating_sub(2 * CHART_MARGIN + Y_LABEL_AREA).max(1));
    let plot_h = f64::from(area_h.saturating_sub(2 * CHART_MARGIN + X_LABEL_AREA + TITLE_SIZE + 12).max(1));
    let labels: Vec<&str> =
        lines.iter().map(|l| l.label.as_str()).chain(panel.vlines.first().map(|_| "flows moved")).collect();
    let font = (FONT_FAMILY, LEGEND_SIZE).into_font();
    let text_w = labels.iter().map(|l| font.box_size(l).map_or(l.len() as u32 * 9, |(w, _)| w)).max().unwrap_or(0);
    let legend_w = f64::from(text_w + LEGEND_SAMPLE_AREA + 2 * LEGEND_MARGIN + 10) / plot_w;
    let legend_h = (labels.len() as f64 * f64::from(LEGEND_SIZE) * 1.25 + f64::from(2 * LEGEND_MARGIN + 10)) / plot_h;

    // Highest curve point (in axis units) under each candidate corner; the top must leave room for the legend above it.
    let span = x.end - x.start;
    let covered = |left: bool| {
        let (from, to) = if left {
            (x.start, x.start + (legend_w + 0.03) * span)
        } else {
            (x.end - (legend_w + 0.03) * span, x.end)
        };
        let ys = lines.iter().flat_map(|l| l.points.iter()).filter(|p| p.0 >= from && p.0 <= to);
        ys.map(|p| to_axis(panel.scale, p.1)).fold(f64::NEG_INFINITY, f64::max)
    };
    let free = (1.0 - legend_h - 0.03).max(0.4);
    let needed_top = |peak: f64| if peak.is_finite() { lo + (peak - lo) / free } else { hi };
    let (top_left, top_right) = (needed_top(covered(true)), needed_top(covered(false)));
    let (legend, top) = if top_right < top_left {
        (SeriesLabelPosition::UpperRight, top_right)
    } else {
        (SeriesLabelPosition::UpperLeft, top_left)
    };
    let top = top.max(hi);
    let y = from_axis(panel.scale, lo)..from_axis(panel.scale, top);
    let y = if y.start.is_finite() && y.end.is_finite() && y.start < y.end { y } else { fallback_y(panel.scale) };
    Layout { x, y, legend }
}

/// y range of the data in axis units with a little margin; whole decades on a log axis.
fn y_data_range(scale: Scale, lines: &[Line]) -> (f64, f64) {
    let ys = lines.iter().flat_map(|l| l.points.iter().map(|p| to_axis(scale, p.1)));
    match (scale, min_max(ys)) {
        (Scale::Linear, Some((min, max))) => {
            let lo = min.min(0.0);
            let hi = if max > lo { max } else { lo + 1.0 };
            (lo, hi + 0.05 * (hi - lo))
        }
        (Scale::Log, Some((min, max))) => {
            let lo = min.floor();
            let hi = max.ceil();
            (lo, if hi > lo { hi } else { lo + 1.0 })
        }
        (_, None) => {
            let y = fallback_y(scale);
            (to_axis(scale, y.start), to_axis(scale, y.end))
        }
    }
}

fn fallback_y(scale: Scale) -> Range<f64> {
    match scale {
        Scale::Linear => 0.0..1.0,
        Scale::Log => 1.0..10.0,
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A valid x range around `bounds`, widened by `pad` on both sides (and to a unit width if it has none).
fn padded(bounds: Option<(f64, f64)>, pad: f64) -> Range<f64> {
    let (lo, hi) = bounds.unwrap_or((0.0, 1.0));
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 1.0, hi + 1.0) };
    lo - pad..hi + pad
}

/// Tick label for an integer axis: whole numbers only.
fn integer_label(x: f64) -> String {
    if (x - x.round()).abs() < 1e-6 { format!("{}", x.round() + 0.0) } else { String::new() }
}

/// Compact tick label: 1.5k, 2M, 0.25, 1e-4.
fn number_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_string()
    } else if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else if a >= 0.01 {
        trim(v)
    } else {
        format!("{v:.0e}")
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}

/// Legend position of a known system, unknown ones last.
fn system_rank(system: &str) -> usize {
    SYSTEMS.iter().position(|s| *s == system).unwrap_or(SYSTEMS.len())
}

/// The colour of a system, the same in both figures.
fn system_color(system: &str) -> RGBColor {
    const OTHERS: [RGBColor; 3] = [RGBColor(44, 160, 44), RGBColor(148, 103, 189), RGBColor(140, 86, 75)];
    match system {
        "baseline" => RGBColor(0, 0, 0),
        "centralmem" => RGBColor(214, 39, 40),
        "clustermem" => RGBColor(255, 127, 14),
        "estate" => RGBColor(31, 90, 200),
        other => OTHERS[other.bytes().map(usize::from).sum::<usize>() % OTHERS.len()],
    }
}

/// A lighter shade of `c` (used for NF.2).
fn lighten(c: RGBColor) -> RGBColor {
    let mix = |v: u8| v + (255 - v) / 2;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

#[cfg(test)]
#[path = "plot_tests.rs"]
mod tests;
