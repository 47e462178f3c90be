//! Charts for binadd, drawn with plotters as PNG or SVG:
//! - the training loss (mean squared error) against iteration,
//! - actual against predicted sums for a few samples, as grouped bars,
//! - a parity chart that overlays TensorFlow's loss curve on binadd's and
//!   plots their absolute difference on a log axis.
//!
//! PNG text is rasterised by plotters' `ab_glyph` feature from DejaVu Sans,
//! embedded by the `dejavu` crate, so no system fonts or fontconfig are needed.
//! SVG text names the `sans-serif` family and the viewer picks the font.
//! The colours follow matplotlib's `ggplot` style sheet: grey panel, white grid.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, ScaleFont};
use anyhow::{ensure, Context, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use plotters::style::{register_font, FontStyle};
// BackendStyle stays qualified because importing it makes RGBColor::stroke_width ambiguous.
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

/// Image encoding of a chart file. The caller chooses the file name and its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageFormat {
    Png,
    Svg,
}

impl ImageFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Svg => "svg",
        }
    }
}

/// Maximum number of samples in the sums chart, because more groups make the bars and labels too narrow to read.
pub const MAX_SUM_SAMPLES: usize = 20;

/// Smallest absolute difference the parity chart draws. Zero and smaller differences are drawn at this value,
/// because a log axis cannot show zero.
pub const DIFFERENCE_FLOOR: f64 = 1e-18;

const LINE_CHART_SIZE: (u32, u32) = (960, 600);
const SUMS_CHART_SIZE: (u32, u32) = (960, 600);
const PARITY_CHART_SIZE: (u32, u32) = (960, 860);

// Colours of matplotlib's ggplot.mplstyle: panel, labels, then the first three series colours.
const PANEL_GREY: RGBColor = RGBColor(0xE5, 0xE5, 0xE5);
const TEXT_GREY: RGBColor = RGBColor(0x55, 0x55, 0x55);
const RED: RGBColor = RGBColor(0xE2, 0x4A, 0x33);
const BLUE: RGBColor = RGBColor(0x34, 0x8A, 0xBD);
const PURPLE: RGBColor = RGBColor(0x98, 0x8E, 0xD5);

// The style sheet has no legend frame. This light grey sets the legend off the panel.
const LEGEND_BORDER: RGBColor = RGBColor(0xBB, 0xBB, 0xBB);

const FONT: &str = "sans-serif";
const TITLE_FONT_SIZE: f64 = 26.0;
const AXIS_DESC_FONT_SIZE: f64 = 18.0;
const TICK_FONT_SIZE: f64 = 14.0;
const LEGEND_FONT_SIZE: f64 = 15.0;

/// Number of y ticks a linear axis aims for.
const LINEAR_TICK_TARGET: usize = 6;
/// Maximum number of decade ticks on a log axis. Wider ranges label every second decade or fewer.
const MAX_LOG_TICKS: i32 = 10;

/// Draws the training loss against the 1-based iteration as a line chart.
///
/// Non-finite losses are skipped, and so are losses of zero or below when `log_scale` is set.
/// A skipped loss leaves a gap in the line. Fails when `losses` is empty or no loss is left to draw.
pub fn draw_loss(
    path: &Path,
    losses: &[f64],
    log_scale: bool,
    title: &str,
    format: ImageFormat,
) -> Result<()> {
    ensure!(
        !losses.is_empty(),
        "cannot draw the loss chart: no loss values were given"
    );

    let scale = if log_scale { Scale::Log } else { Scale::Linear };
    let runs = plottable_runs(losses, |v| scale.can_show(v));
    let axis = YAxis::fit(scale, run_values(&runs)).with_context(|| {
        format!(
            "cannot draw the loss chart: none of the {} loss values is {}",
            losses.len(),
            scale.requirement()
        )
    })?;

    let panel = LinePanel {
        caption: Some(title),
        y_desc: axis.describe("mean squared error"),
        axis,
        iterations: losses.len(),
        series: vec![LineSeriesData {
            name: None,
            colour: BLUE,
            width: 2,
            runs,
        }],
    };
    write_chart(path, format, &LossChart { panel })
}

/// Draws the actual and predicted sum of each sample as a pair of bars, labelled on the x axis by `labels`.
///
/// Fails when the slices are empty, differ in length or hold more than [`MAX_SUM_SAMPLES`] samples.
pub fn draw_sums(
    path: &Path,
    actual: &[u64],
    predicted: &[u64],
    labels: &[usize],
    title: &str,
    format: ImageFormat,
) -> Result<()> {
    ensure!(
        !actual.is_empty(),
        "cannot draw the sums chart: no samples were given"
    );
    ensure!(
        actual.len() == predicted.len() && actual.len() == labels.len(),
        "cannot draw the sums chart: got {} actual sums, {} predicted sums and {} labels, \
         but each sample needs one of each",
        actual.len(),
        predicted.len(),
        labels.len()
    );
    ensure!(
        actual.len() <= MAX_SUM_SAMPLES,
        "cannot draw the sums chart: got {} samples, but at most {MAX_SUM_SAMPLES} fit, so pass a subset",
        actual.len()
    );

    let chart = SumsChart {
        title,
        actual,
        predicted,
        labels,
    };
    write_chart(path, format, &chart)
}

/// Draws TensorFlow's (`reference`) and binadd's (`ours`) loss curves in a top panel
/// and their absolute difference on a log axis in a bottom panel.
///
/// Non-finite losses are skipped and leave a gap, in the difference too.
/// Differences below [`DIFFERENCE_FLOOR`], zero included, are drawn at the floor.
/// Fails when either slice is empty, the lengths differ, or no iteration has two finite losses.
pub fn draw_parity(
    path: &Path,
    reference: &[f64],
    ours: &[f64],
    title: &str,
    format: ImageFormat,
) -> Result<()> {
    ensure!(
        !reference.is_empty() && !ours.is_empty(),
        "cannot draw the parity chart: got {} TensorFlow losses and {} binadd losses, but both must be non-empty",
        reference.len(),
        ours.len()
    );
    ensure!(
        reference.len() == ours.len(),
        "cannot draw the parity chart: got {} TensorFlow losses but {} binadd losses, \
         so compare runs with the same number of iterations",
        reference.len(),
        ours.len()
    );

    let differences: Vec<f64> = reference
        .iter()
        .zip(ours)
        .map(|(r, o)| absolute_difference(*r, *o))
        .collect();
    let difference_runs = plottable_runs(&differences, |v| v.is_finite());
    let difference_axis = YAxis::fit(Scale::Log, run_values(&difference_runs)).context(
        "cannot draw the parity chart: no iteration has a finite loss from both TensorFlow and binadd",
    )?;

    // Every iteration with a finite difference has finite losses, so the loss axis also fits.
    let reference_runs = plottable_runs(reference, |v| v.is_finite());
    let our_runs = plottable_runs(ours, |v| v.is_finite());
    let loss_axis = YAxis::fit(
        Scale::Linear,
        run_values(&reference_runs).chain(run_values(&our_runs)),
    )
    .context("cannot draw the parity chart: no finite loss")?;

    let losses = LinePanel {
        caption: None,
        y_desc: loss_axis.describe("mean squared error"),
        axis: loss_axis,
        iterations: reference.len(),
        // TensorFlow's wide line stays visible where binadd's thin line lies on top of it.
        series: vec![
            LineSeriesData {
                name: Some("TensorFlow"),
                colour: RED,
                width: 5,
                runs: reference_runs,
            },
            LineSeriesData {
                name: Some("binadd"),
                colour: BLUE,
                width: 2,
                runs: our_runs,
            },
        ],
    };
    let difference = LinePanel {
        caption: None,
        y_desc: format!("|difference| (zero drawn at {DIFFERENCE_FLOOR:e})"),
        axis: difference_axis,
        iterations: reference.len(),
        series: vec![LineSeriesData {
            name: None,
            colour: PURPLE,
            width: 2,
            runs: difference_runs,
        }],
    };
    write_chart(
        path,
        format,
        &ParityChart {
            title,
            losses,
            difference,
        },
    )
}

/// Returns |reference - ours| raised to at least [`DIFFERENCE_FLOOR`], or NaN when either loss is not finite.
fn absolute_difference(reference: f64, ours: f64) -> f64 {
    if !(reference.is_finite() && ours.is_finite()) {
        // f64::max would turn NaN into the floor and hide the missing loss.
        return f64::NAN;
    }
    (reference - ours).abs().max(DIFFERENCE_FLOOR)
}

/// Chart whose drawing code is shared by the PNG and SVG backends.
trait Chart {
    fn size(&self) -> (u32, u32);

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static;
}

struct LossChart<'a> {
    panel: LinePanel<'a>,
}

impl Chart for LossChart<'_> {
    fn size(&self) -> (u32, u32) {
        LINE_CHART_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        draw_line_panel(root, &self.panel)
    }
}

struct ParityChart<'a> {
    title: &'a str,
    losses: LinePanel<'a>,
    difference: LinePanel<'a>,
}

impl Chart for ParityChart<'_> {
    fn size(&self) -> (u32, u32) {
        PARITY_CHART_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let body = root.margin(12, 0, 0, 0).titled(self.title, title_font())?;
        let height = body.dim_in_pixel().1;
        let (top, bottom) = body.split_vertically(height * 55 / 100);
        draw_line_panel(&top, &self.losses)?;
        draw_line_panel(&bottom, &self.difference)
    }
}

struct SumsChart<'a> {
    title: &'a str,
    actual: &'a [u64],
    predicted: &'a [u64],
    labels: &'a [usize],
}

impl Chart for SumsChart<'_> {
    fn size(&self) -> (u32, u32) {
        SUMS_CHART_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let count = self.actual.len();
        let largest = self
            .actual
            .iter()
            .chain(self.predicted)
            .copied()
            .max()
            .unwrap_or(0);
        // The headroom above the tallest bar keeps the legend clear of the bars.
        let top = (largest as f64 * 1.3).max(1.0);
        let axis = YAxis::with_range(Scale::Linear, 0.0..top, true);

        // Sample i is centred on x = i, so integer key points put one label under each pair of bars.
        let x_range = TickedRange::new(
            -0.5..count as f64 - 0.5,
            (0..count).map(|i| i as f64).collect(),
        );
        let y_range = axis.coordinate_range();
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, title_font())
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(x_range, y_range)?;
        chart.plotting_area().fill(&PANEL_GREY)?;

        let x_label = |x: &f64| sample_label(self.labels, *x);
        let y_label = |y: &f64| axis.tick_label(*y);
        chart
            .configure_mesh()
            .bold_line_style(WHITE)
            .light_line_style(TRANSPARENT)
            .axis_style(PANEL_GREY)
            .x_desc("sample")
            .y_desc("sum")
            .x_label_formatter(&x_label)
            .y_label_formatter(&y_label)
            .label_style(tick_font())
            .axis_desc_style(axis_desc_font())
            .draw()?;

        let bars = [
            (self.actual, RED, -0.4, "actual sum"),
            (self.predicted, BLUE, 0.0, "predicted sum"),
        ];
        for (sums, colour, offset, name) in bars {
            let rectangles = sums.iter().enumerate().map(move |(i, &sum)| {
                let left = i as f64 + offset + 0.02;
                let right = left + 0.36;
                Rectangle::new([(left, 0.0), (right, sum as f64)], colour.filled())
            });
            chart
                .draw_series(rectangles)?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 16, y + 6)], colour.filled())
                });
        }

        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
    }
}

/// Returns the label of the sample centred on `x`, or nothing between samples.
fn sample_label(labels: &[usize], x: f64) -> String {
    let index = x.round();
    if index < 0.0 || (x - index).abs() > 1e-6 {
        return String::new();
    }
    labels
        .get(index as usize)
        .map(usize::to_string)
        .unwrap_or_default()
}

/// One line chart panel: losses or differences against the 1-based iteration.
struct LinePanel<'a> {
    caption: Option<&'a str>,
    y_desc: String,
    axis: YAxis,
    iterations: usize,
    series: Vec<LineSeriesData<'a>>,
}

/// Line of one data set, with the name shown in the legend when there is one.
struct LineSeriesData<'a> {
    name: Option<&'a str>,
    colour: RGBColor,
    width: u32,
    runs: Vec<Vec<(usize, f64)>>,
}

fn draw_line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &LinePanel,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let mut builder = ChartBuilder::on(area);
    if let Some(caption) = panel.caption {
        builder.caption(caption, title_font());
    }
    // Iteration 0 and n + 1 pad the x axis so a single iteration sits mid-panel.
    let x_range = 0..panel.iterations + 1;
    // The wider right margin leaves room for a long iteration label centred on the last tick.
    let mut chart = builder
        .margin(16)
        .margin_right(40)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d(x_range, panel.axis.coordinate_range())?;
    chart.plotting_area().fill(&PANEL_GREY)?;

    let y_label = |y: &f64| panel.axis.tick_label(*y);
    chart
        .configure_mesh()
        .bold_line_style(WHITE)
        .light_line_style(TRANSPARENT)
        .axis_style(PANEL_GREY)
        .x_labels(10)
        .x_desc("iteration")
        .y_desc(panel.y_desc.as_str())
        .y_label_formatter(&y_label)
        .label_style(tick_font())
        .axis_desc_style(axis_desc_font())
        .draw()?;

    for series in &panel.series {
        let style = series.colour.stroke_width(series.width);
        for run in &series.runs {
            let points: Vec<(usize, f64)> = run
                .iter()
                .map(|&(x, y)| (x, panel.axis.to_axis(y)))
                .collect();
            if let [point] = points[..] {
                // A line needs two points, so a lone value is drawn as a dot.
                let radius = series.width as i32 + 2;
                chart.draw_series([Circle::new(point, radius, series.colour.filled())])?;
                continue;
            }
            let pixels: Vec<(i32, i32)> = points.iter().map(|p| chart.backend_coord(p)).collect();
            let selected = column_extremes(&pixels);
            let selected_pixels: Vec<(i32, i32)> =
                selected.iter().map(|&index| pixels[index]).collect();
            for piece in split_at_sharp_turns(&selected_pixels) {
                let piece_points = selected[piece].iter().map(|&index| points[index]);
                chart.draw_series(LineSeries::new(piece_points, style))?;
            }
        }
        if let Some(name) = series.name {
            // An empty series carries the legend entry, so it appears once however many runs there are.
            chart
                .draw_series(std::iter::empty::<PathElement<(usize, f64)>>())?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
    }

    if panel.series.iter().any(|series| series.name.is_some()) {
        draw_legend(&mut chart, emptiest_corner(panel))?;
    }
    Ok(())
}

/// Picks the corner of the panel that the fewest points fall into, preferring the upper right on ties.
/// Each corner is the outer 30 % of the width by the outer 25 % of the height.
fn emptiest_corner(panel: &LinePanel) -> SeriesLabelPosition {
    let x_span = (panel.iterations + 1) as f64;
    let y_span = panel.axis.range.end - panel.axis.range.start;
    let points: Vec<(f64, f64)> = panel
        .series
        .iter()
        .flat_map(|series| series.runs.iter().flatten())
        .map(|&(iteration, value)| {
            let x = iteration as f64 / x_span;
            let y = (panel.axis.to_axis(value) - panel.axis.range.start) / y_span;
            (x, y)
        })
        .collect();
    let count_in =
        |in_corner: fn(f64, f64) -> bool| points.iter().filter(|&&(x, y)| in_corner(x, y)).count();

    let corners = [
        (
            SeriesLabelPosition::UpperRight,
            count_in(|x, y| x > 0.7 && y > 0.75),
        ),
        (
            SeriesLabelPosition::LowerRight,
            count_in(|x, y| x > 0.7 && y < 0.25),
        ),
        (
            SeriesLabelPosition::UpperLeft,
            count_in(|x, y| x < 0.3 && y > 0.75),
        ),
        (
            SeriesLabelPosition::LowerLeft,
            count_in(|x, y| x < 0.3 && y < 0.25),
        ),
    ];
    // min_by_key returns the first of equal minima, so ties keep the order above.
    let (position, _) = corners
        .into_iter()
        .min_by_key(|&(_, count)| count)
        .unwrap_or((SeriesLabelPosition::UpperRight, 0));
    position
}

fn draw_legend<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .position(position)
        .margin(12)
        .background_style(WHITE.mix(0.9))
        .border_style(LEGEND_BORDER)
        .label_font((FONT, LEGEND_FONT_SIZE).into_font().color(&TEXT_GREY))
        .draw()?;
    Ok(())
}

/// Returns the indices of the points worth drawing: in each run of points that share a pixel column,
/// the first, the highest, the lowest and the last, in their original order.
///
/// A 1-pixel line through only these points covers the same pixels as the full line (M4 aggregation),
/// and a wider one differs in a few pixels at its joints. Keeping about four points per column bounds
/// the SVG size and drawing time of long training runs.
fn column_extremes(pixels: &[(i32, i32)]) -> Vec<usize> {
    let mut selected = Vec::new();
    let mut start = 0;
    while start < pixels.len() {
        let column = pixels[start].0;
        let end = pixels[start..]
            .iter()
            .position(|pixel| pixel.0 != column)
            .map_or(pixels.len(), |offset| start + offset);

        let group = start..end;
        // Screen y grows downwards, so the highest point has the smallest y.
        let highest = group
            .clone()
            .min_by_key(|&index| pixels[index].1)
            .unwrap_or(start);
        let lowest = group
            .clone()
            .max_by_key(|&index| pixels[index].1)
            .unwrap_or(start);
        let mut indices = [start, highest, lowest, end - 1];
        indices.sort_unstable();
        for index in indices {
            if selected.last() != Some(&index) {
                selected.push(index);
            }
        }
        start = end;
    }
    selected
}

/// Splits a polyline, given in pixels, into index ranges of pieces that share their end points,
/// cutting wherever the line turns by more than 120 degrees.
///
/// plotters-backend 0.3.7 outlines a line wider than 1 pixel by intersecting the offset edges
/// of neighbouring segments. Near a reversal that intersection lies far off the line and draws a
/// long spike, so noisy curves need the cut. At turns of up to 120 degrees it stays within one
/// line width of the joint.
fn split_at_sharp_turns(pixels: &[(i32, i32)]) -> Vec<std::ops::RangeInclusive<usize>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    // Indices of the last two points at distinct pixels. Repeated pixels form no segment.
    let mut previous: Option<(usize, usize)> = None;
    for (index, &pixel) in pixels.iter().enumerate().skip(1) {
        let Some((before, last)) = previous else {
            if pixel != pixels[start] {
                previous = Some((start, index));
            }
            continue;
        };
        if pixel == pixels[last] {
            continue;
        }
        let incoming = (
            pixels[last].0 - pixels[before].0,
            pixels[last].1 - pixels[before].1,
        );
        let outgoing = (pixel.0 - pixels[last].0, pixel.1 - pixels[last].1);
        if turns_sharply(incoming, outgoing) {
            pieces.push(start..=last);
            start = last;
        }
        previous = Some((last, index));
    }
    pieces.push(start..=pixels.len() - 1);
    pieces
}

/// Reports whether the direction changes by more than 120 degrees, that is cos(turn) < -0.5.
fn turns_sharply(incoming: (i32, i32), outgoing: (i32, i32)) -> bool {
    let (a, b) = (incoming, outgoing);
    let dot = f64::from(a.0) * f64::from(b.0) + f64::from(a.1) * f64::from(b.1);
    let lengths = f64::from(a.0).hypot(f64::from(a.1)) * f64::from(b.0).hypot(f64::from(b.1));
    dot < -0.5 * lengths
}

/// Splits `values` into runs of consecutive values that `keep` accepts, as (1-based iteration, value) points.
/// A rejected value ends a run, so the line shows a gap there instead of bridging it.
fn plottable_runs(values: &[f64], keep: impl Fn(f64) -> bool) -> Vec<Vec<(usize, f64)>> {
    let mut runs = Vec::new();
    let mut current = Vec::new();
    for (index, &value) in values.iter().enumerate() {
        if keep(value) {
            current.push((index + 1, value));
        } else if !current.is_empty() {
            runs.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

fn run_values(runs: &[Vec<(usize, f64)>]) -> impl Iterator<Item = f64> + '_ {
    runs.iter().flatten().map(|&(_, value)| value)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scale {
    Linear,
    Log,
}

impl Scale {
    fn can_show(self, value: f64) -> bool {
        match self {
            Scale::Linear => value.is_finite(),
            Scale::Log => value.is_finite() && value > 0.0,
        }
    }

    fn requirement(self) -> &'static str {
        match self {
            Scale::Linear => "finite",
            Scale::Log => "finite and positive, as the log scale requires",
        }
    }
}

/// Y axis with its range and tick positions in axis units.
/// A log axis works in log10 units, so plotters draws it as a linear axis and only the tick labels show powers of ten.
struct YAxis {
    scale: Scale,
    range: Range<f64>,
    ticks: Vec<f64>,
    /// Distance between ticks, which sets how many decimals a linear tick label gets.
    tick_step: f64,
}

impl YAxis {
    /// Fits an axis around `values`, which must all pass `scale.can_show`. Returns `None` when there are no values.
    fn fit(scale: Scale, values: impl Iterator<Item = f64>) -> Option<YAxis> {
        let (min, max) = values.fold(None, |bounds: Option<(f64, f64)>, v| match bounds {
            None => Some((v, v)),
            Some((min, max)) => Some((min.min(v), max.max(v))),
        })?;

        let axis = match scale {
            Scale::Linear => {
                // Values closer than 1e-9 relative count as equal, because ticks that far apart would
                // need more digits than a tick label shows.
                let magnitude = min.abs().max(max.abs());
                let range = if max - min > magnitude * 1e-9 {
                    let margin = (max - min) * 0.05;
                    min - margin..max + margin
                } else {
                    // All values are equal, so the axis gets a span of its own around them.
                    let half_span = if magnitude == 0.0 {
                        1.0
                    } else {
                        magnitude * 0.1
                    };
                    min - half_span..max + half_span
                };
                YAxis::with_range(Scale::Linear, range, false)
            }
            Scale::Log => {
                let mut low = min.log10().floor();
                let mut high = max.log10().ceil();
                if low == high {
                    low -= 1.0;
                    high += 1.0;
                }
                YAxis::with_range(Scale::Log, low..high, false)
            }
        };
        Some(axis)
    }

    /// Builds an axis over `range` in axis units (log10 units for a log axis).
    /// With `integer_ticks` a linear axis never puts ticks between whole numbers.
    fn with_range(scale: Scale, range: Range<f64>, integer_ticks: bool) -> YAxis {
        match scale {
            Scale::Linear => {
                let mut tick_step =
                    nice_step((range.end - range.start) / LINEAR_TICK_TARGET as f64);
                if integer_ticks {
                    tick_step = tick_step.max(1.0);
                }
                let ticks = ticks_in(&range, tick_step);
                YAxis {
                    scale,
                    range,
                    ticks,
                    tick_step,
                }
            }
            Scale::Log => {
                // Ticks sit on whole decades, and a 5 % margin keeps the extreme values off the panel border.
                let decades = (range.end - range.start).round() as i32;
                let tick_step = f64::from((decades + MAX_LOG_TICKS - 1) / MAX_LOG_TICKS);
                let margin = (range.end - range.start) * 0.05;
                let ticks = ticks_in(&range, tick_step);
                YAxis {
                    scale,
                    range: range.start - margin..range.end + margin,
                    ticks,
                    tick_step,
                }
            }
        }
    }

    fn coordinate_range(&self) -> TickedRange {
        TickedRange::new(self.range.clone(), self.ticks.clone())
    }

    fn to_axis(&self, value: f64) -> f64 {
        match self.scale {
            Scale::Linear => value,
            Scale::Log => value.log10(),
        }
    }

    fn describe(&self, quantity: &str) -> String {
        match self.scale {
            Scale::Linear => quantity.to_string(),
            Scale::Log => format!("{quantity} (log scale)"),
        }
    }

    fn tick_label(&self, tick: f64) -> String {
        match self.scale {
            Scale::Linear => {
                let magnitude = self.range.start.abs().max(self.range.end.abs());
                linear_tick_label(tick, self.tick_step, magnitude)
            }
            Scale::Log => log_tick_label(tick),
        }
    }
}

/// Linear coordinate whose tick positions this module chooses instead of plotters.
/// It draws grid lines at the ticks only, with no minor grid lines between them.
struct TickedRange {
    linear: RangedCoordf64,
    ticks: Vec<f64>,
}

impl TickedRange {
    fn new(range: Range<f64>, ticks: Vec<f64>) -> TickedRange {
        TickedRange {
            linear: range.into(),
            ticks,
        }
    }
}

impl Ranged for TickedRange {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, pixel_range: (i32, i32)) -> i32 {
        self.linear.map(value, pixel_range)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.linear.range()
    }
}

/// Rounds `raw` up to the next 1, 2 or 5 times a power of ten.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|factor| factor * magnitude)
        .find(|step| *step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// Returns the multiples of `step` inside `range`.
fn ticks_in(range: &Range<f64>, step: f64) -> Vec<f64> {
    let first = (range.start / step).ceil() as i64;
    let last = (range.end / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Formats a linear tick with just enough decimals to tell neighbouring ticks apart.
/// Axes whose largest absolute value (`magnitude`) is below 0.001 or at least 1e6,
/// or whose ticks would need more than 8 decimals, get scientific notation.
fn linear_tick_label(tick: f64, step: f64, magnitude: f64) -> String {
    let step_exponent = step.log10().floor() as i32;
    if !(1e-3..1e6).contains(&magnitude) || step_exponent < -8 {
        let tick_exponent = if tick == 0.0 {
            step_exponent
        } else {
            tick.abs().log10().floor() as i32
        };
        let digits = (tick_exponent - step_exponent).clamp(0, 6) as usize;
        return format!("{tick:.digits$e}");
    }
    let decimals = (-step_exponent).max(0) as usize;
    // Adding 0.0 turns -0.0 into 0.0, which would otherwise print as "-0".
    format!("{:.decimals$}", tick + 0.0)
}

/// Formats the log10 tick `exponent` as the power of ten it stands for.
fn log_tick_label(exponent: f64) -> String {
    let exponent = exponent.round() as i32;
    if (-3..=3).contains(&exponent) {
        let decimals = (-exponent).max(0) as usize;
        format!("{:.decimals$}", 10f64.powi(exponent))
    } else {
        format!("1e{exponent}")
    }
}

fn title_font() -> TextStyle<'static> {
    FontDesc::new(FontFamily::SansSerif, TITLE_FONT_SIZE, FontStyle::Bold).color(&TEXT_GREY)
}

fn axis_desc_font() -> TextStyle<'static> {
    (FONT, AXIS_DESC_FONT_SIZE).into_font().color(&TEXT_GREY)
}

fn tick_font() -> TextStyle<'static> {
    (FONT, TICK_FONT_SIZE).into_font().color(&TEXT_GREY)
}

/// Registers the embedded DejaVu Sans faces as the `sans-serif` family, once per process.
fn register_fonts() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    ensure!(
        registered,
        "failed to load the DejaVu Sans font embedded by the dejavu crate"
    );
    Ok(())
}

/// Renders `chart` in memory and writes it to `path` atomically.
fn write_chart(path: &Path, format: ImageFormat, chart: &impl Chart) -> Result<()> {
    register_fonts()?;
    let bytes = match format {
        ImageFormat::Png => render_png(chart),
        ImageFormat::Svg => render_svg(chart).map(String::into_bytes),
    }
    .with_context(|| format!("failed to draw the chart for {}", path.display()))?;
    write_atomically(path, &bytes)
}

fn render_png(chart: &impl Chart) -> Result<Vec<u8>> {
    let (width, height) = chart.size();
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let bitmap = BitMapBackend::with_buffer(&mut pixels, (width, height));
        let root = GlyphTextBackend { inner: bitmap }.into_drawing_area();
        root.fill(&WHITE)?;
        chart.draw(&root)?;
        root.present()?;
    }

    let mut encoded = Vec::new();
    let mut encoder = png::Encoder::new(&mut encoded, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(encoded)
}

/// Drawing backend that draws text in the embedded DejaVu Sans faces itself and passes everything else to `inner`.
///
/// plotters 0.3.7 with the `ab_glyph` feature rasterises each glyph with its pixel bounds at the pen,
/// so it drops the part of the left side bearing that rounds to whole pixels, and it truncates the pen
/// to whole pixels. In DejaVu Sans at 14 px only "1" has a bearing of over a pixel among the digits,
/// so it sits a pixel further left than the other digits and "2185" reads "21 85".
/// This backend places each glyph at its exact origin instead.
/// Text keeps the advances, kerning and anchoring of plotters' `layout_box`, so it occupies the box
/// that plotters' chart layout reserved for it.
struct GlyphTextBackend<B> {
    inner: B,
}

impl<B: DrawingBackend> DrawingBackend for GlyphTextBackend<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        colour: BackendColor,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_pixel(point, colour)
    }

    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vertices: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.fill_polygon(vertices, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        let Some(font) = embedded_font(style) else {
            return self.inner.draw_text(text, style, pos);
        };
        let colour = style.color();
        if colour.alpha == 0.0 {
            return Ok(());
        }

        // The anchoring and rotation follow the default draw_text of plotters-backend 0.3.7.
        let ((min_x, min_y), (max_x, max_y)) = style
            .layout_box(text)
            .map_err(|error| DrawingErrorKind::FontError(Box::new(error)))?;
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -(max_x - min_x),
            HPos::Center => -(max_x - min_x) / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -(max_y - min_y) / 2,
            VPos::Bottom => -(max_y - min_y),
        };
        let transform = style.transform();
        let (width, height) = self.inner.get_size();

        for ((x, y), coverage) in rasterise_text(&font, style.size() as f32, text) {
            let (x, y) = transform.transform(x + dx - min_x, y + dy - min_y);
            let (x, y) = (pos.0 + x, pos.1 + y);
            if x >= 0 && x < width as i32 && y >= 0 && y < height as i32 {
                let alpha = colour.alpha * f64::from(coverage);
                self.inner.draw_pixel(
                    (x, y),
                    BackendColor {
                        alpha,
                        rgb: colour.rgb,
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// Returns the embedded DejaVu Sans face, bold or regular, that [`register_fonts`] registered for a `sans-serif`
/// text style, or `None` for any other family. Italic and oblique get the regular face, as in plotters.
fn embedded_font<S: BackendTextStyle>(style: &S) -> Option<FontRef<'static>> {
    if style.family().as_str() != FONT {
        return None;
    }
    let bytes = match style.style() {
        FontStyle::Bold => dejavu::sans::bold(),
        _ => dejavu::sans::regular(),
    };
    FontRef::try_from_slice(bytes).ok()
}

/// Rasterises `text` at `size` pixels and returns the coverage, from 0 to 1, of each pixel it touches,
/// relative to the start of the pen.
///
/// Each glyph sits at its fractional pen position, so the spacing between glyphs follows the font's advances.
/// The baseline lies at `size / 2` rounded to a whole pixel, so horizontal strokes stay sharp.
/// plotters 0.3.7 puts it there too, except for glyphs shorter than half the size, such as "." at odd sizes.
fn rasterise_text(font: &FontRef, size: f32, text: &str) -> Vec<((i32, i32), f32)> {
    let font = font.as_scaled(size);
    let baseline = (size / 2.0).round();
    // Neighbouring glyphs can share a pixel column, so coverage is summed per pixel and each pixel is drawn once.
    let mut coverage: BTreeMap<(i32, i32), f32> = BTreeMap::new();
    let mut pen = 0.0;
    let mut previous = None;
    for character in text.chars() {
        let id = font.glyph_id(character);
        if let Some(previous) = previous {
            pen += font.kern(previous, id);
        }
        previous = Some(id);

        let glyph = id.with_scale_and_position(font.scale(), point(pen, baseline));
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|x, y, amount| {
                let pixel = (
                    bounds.min.x as i32 + x as i32,
                    bounds.min.y as i32 + y as i32,
                );
                let total = coverage.entry(pixel).or_insert(0.0);
                *total = (*total + amount).min(1.0);
            });
        }
        pen += font.h_advance(id);
    }
    coverage.into_iter().collect()
}

fn render_svg(chart: &impl Chart) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, chart.size()).into_drawing_area();
        root.fill(&WHITE)?;
        chart.draw(&root)?;
        root.present()?;
    }
    Ok(svg)
}

/// Writes `bytes` to a temporary file next to `path`, then renames it to `path`.
/// Readers see the old file or the complete new one, and on failure the temporary file is removed.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("invalid chart path {}: it names no file", path.display()))?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };

    let prefix = format!(".{}.", file_name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        // tempfile creates files with mode 0600, but 0666 less the umask matches File::create.
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }

    let mut temporary = builder.tempfile_in(directory).with_context(|| {
        format!(
            "failed to create a temporary file in {}",
            directory.display()
        )
    })?;
    temporary
        .write_all(bytes)
        .and_then(|()| temporary.as_file().sync_all())
        .with_context(|| format!("failed to write {}", temporary.path().display()))?;
    temporary
        .persist(path)
        .map_err(|error| error.error)
        .with_context(|| {
            format!(
                "failed to rename the temporary chart file to {}",
                path.display()
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::fs;

    /// Decoded 8-bit RGB image.
    struct Decoded {
        width: u32,
        height: u32,
        pixels: Vec<[u8; 3]>,
    }

    impl Decoded {
        fn distinct_colours(&self) -> usize {
            self.pixels.iter().collect::<HashSet<_>>().len()
        }

        fn count(&self, colour: RGBColor) -> usize {
            let expected = [colour.0, colour.1, colour.2];
            self.pixels.iter().filter(|p| **p == expected).count()
        }
    }

    fn decode_png(path: &Path) -> Decoded {
        let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buffer).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        let pixels = buffer[..info.buffer_size()]
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        Decoded {
            width: info.width,
            height: info.height,
            pixels,
        }
    }

    /// Reads an SVG file, checks that it is a complete SVG document and returns the trimmed content of its `<text>` elements.
    fn read_svg_texts(path: &Path) -> Vec<String> {
        let svg = fs::read_to_string(path).unwrap();
        assert!(
            svg.starts_with("<svg"),
            "not an SVG document: {}",
            &svg[..svg.len().min(80)]
        );
        assert!(
            svg.trim_end().ends_with("</svg>"),
            "SVG document is cut short"
        );
        svg.split("<text")
            .skip(1)
            .map(|element| {
                let content = &element[element.find('>').unwrap() + 1..];
                content[..content.find("</text>").unwrap()]
                    .trim()
                    .to_string()
            })
            .collect()
    }

    /// Loss curve that decays like a training run, with a little wobble.
    fn decaying_losses(count: usize) -> Vec<f64> {
        (0..count)
            .map(|i| 0.25 * (-(i as f64) / 80.0).exp() + 1e-4 * (1.0 + (i as f64).sin()))
            .collect()
    }

    fn leftover_files(directory: &Path) -> Vec<String> {
        fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Checks that a PNG has the expected size, is not blank and shows the panel background.
    fn assert_drawn_png(path: &Path, size: (u32, u32)) -> Decoded {
        let image = decode_png(path);
        assert_eq!((image.width, image.height), size);
        // Anti-aliased text alone gives over 100 distinct colours on these charts.
        assert!(
            image.distinct_colours() > 30,
            "only {} colours",
            image.distinct_colours()
        );
        assert!(image.count(PANEL_GREY) > 10_000, "panel background missing");
        assert!(image.count(WHITE) > 10_000, "white margin missing");
        image
    }

    #[test]
    fn loss_png_linear() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("loss.png");
        draw_loss(
            &path,
            &decaying_losses(500),
            false,
            "Training loss",
            ImageFormat::Png,
        )
        .unwrap();

        let image = assert_drawn_png(&path, LINE_CHART_SIZE);
        assert!(image.count(BLUE) > 500, "loss line missing");
        assert_eq!(leftover_files(directory.path()), vec!["loss.png"]);
    }

    #[test]
    fn loss_png_log_scale() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("loss.png");
        draw_loss(
            &path,
            &decaying_losses(500),
            true,
            "Training loss",
            ImageFormat::Png,
        )
        .unwrap();

        let image = assert_drawn_png(&path, LINE_CHART_SIZE);
        assert!(image.count(BLUE) > 500, "loss line missing");
    }

    #[test]
    fn loss_svg_contains_text() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("loss.svg");
        draw_loss(
            &path,
            &decaying_losses(50),
            true,
            "Training loss",
            ImageFormat::Svg,
        )
        .unwrap();

        let texts = read_svg_texts(&path);
        assert!(texts.contains(&"Training loss".to_string()), "{texts:?}");
        assert!(
            texts.contains(&"mean squared error (log scale)".to_string()),
            "{texts:?}"
        );
        assert!(texts.contains(&"iteration".to_string()), "{texts:?}");
        assert!(
            texts.contains(&"0.1".to_string()),
            "log tick missing: {texts:?}"
        );
    }

    #[test]
    fn loss_single_point() {
        let directory = tempfile::tempdir().unwrap();
        for log_scale in [false, true] {
            let path = directory.path().join(format!("single-{log_scale}.png"));
            draw_loss(&path, &[0.2], log_scale, "One iteration", ImageFormat::Png).unwrap();

            let image = assert_drawn_png(&path, LINE_CHART_SIZE);
            assert!(image.count(BLUE) > 20, "dot for the single loss missing");
        }
    }

    #[test]
    fn loss_all_equal_values() {
        let directory = tempfile::tempdir().unwrap();
        for (value, log_scale) in [(0.0, false), (0.125, false), (0.125, true), (1.0, true)] {
            let path = directory
                .path()
                .join(format!("flat-{value}-{log_scale}.png"));
            draw_loss(
                &path,
                &[value; 40],
                log_scale,
                "Flat loss",
                ImageFormat::Png,
            )
            .unwrap();

            let image = assert_drawn_png(&path, LINE_CHART_SIZE);
            assert!(image.count(BLUE) > 500, "flat line missing for {value}");
        }
    }

    #[test]
    fn loss_skips_non_finite_values() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("gaps.png");
        let losses = [
            0.3,
            0.2,
            f64::NAN,
            0.1,
            f64::INFINITY,
            0.05,
            0.04,
            f64::NEG_INFINITY,
        ];
        draw_loss(&path, &losses, false, "Loss with gaps", ImageFormat::Png).unwrap();

        assert_drawn_png(&path, LINE_CHART_SIZE);
    }

    #[test]
    fn loss_log_scale_skips_zero() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("zero.png");
        draw_loss(
            &path,
            &[0.3, 0.01, 0.0, 0.001],
            true,
            "Loss reaching zero",
            ImageFormat::Png,
        )
        .unwrap();

        assert_drawn_png(&path, LINE_CHART_SIZE);
    }

    #[test]
    fn loss_empty_input_errors() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("loss.png");
        let error = draw_loss(&path, &[], false, "Empty", ImageFormat::Png).unwrap_err();

        assert!(error.to_string().contains("no loss values"), "{error}");
        assert!(!path.exists());
    }

    #[test]
    fn loss_without_finite_values_errors() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("loss.png");
        let error = draw_loss(
            &path,
            &[f64::NAN, f64::INFINITY],
            false,
            "NaN",
            ImageFormat::Png,
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("none of the 2 loss values is finite"),
            "{error}"
        );

        let error = draw_loss(&path, &[0.0, -1.0], true, "Zero", ImageFormat::Png).unwrap_err();
        assert!(error.to_string().contains("positive"), "{error}");
        assert!(leftover_files(directory.path()).is_empty());
    }

    #[test]
    fn sums_png_draws_bar_pairs() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("sums.png");
        let actual = [12, 200, 77, 5, 130];
        let predicted = [12, 72, 77, 5, 131];
        let labels = [3, 14, 15, 92, 65];
        draw_sums(
            &path,
            &actual,
            &predicted,
            &labels,
            "Sums",
            ImageFormat::Png,
        )
        .unwrap();

        let image = assert_drawn_png(&path, SUMS_CHART_SIZE);
        let actual_pixels = image.count(RED);
        let predicted_pixels = image.count(BLUE);
        assert!(
            actual_pixels > 5_000,
            "actual bars missing: {actual_pixels} pixels"
        );
        assert!(
            predicted_pixels > 5_000,
            "predicted bars missing: {predicted_pixels} pixels"
        );
    }

    #[test]
    fn sums_max_samples_and_zeros() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("sums.png");
        let labels: Vec<usize> = (0..MAX_SUM_SAMPLES).collect();
        let actual: Vec<u64> = (0..MAX_SUM_SAMPLES as u64).map(|i| i * 13 % 255).collect();
        let predicted: Vec<u64> = actual.iter().map(|s| s ^ 4).collect();
        draw_sums(
            &path,
            &actual,
            &predicted,
            &labels,
            "Twenty samples",
            ImageFormat::Png,
        )
        .unwrap();
        assert_drawn_png(&path, SUMS_CHART_SIZE);

        // All sums zero gives a degenerate value range.
        draw_sums(
            &path,
            &[0, 0],
            &[0, 0],
            &[1, 2],
            "Zero sums",
            ImageFormat::Png,
        )
        .unwrap();
        assert_drawn_png(&path, SUMS_CHART_SIZE);
    }

    #[test]
    fn sums_svg_contains_text() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("sums.svg");
        draw_sums(&path, &[9], &[8], &[41], "One sample", ImageFormat::Svg).unwrap();

        let texts = read_svg_texts(&path);
        assert!(texts.contains(&"One sample".to_string()), "{texts:?}");
        assert!(texts.contains(&"actual sum".to_string()), "{texts:?}");
        assert!(texts.contains(&"predicted sum".to_string()), "{texts:?}");
        assert!(texts.contains(&"sum".to_string()), "{texts:?}");
        assert!(
            texts.contains(&"41".to_string()),
            "sample label missing: {texts:?}"
        );
    }

    #[test]
    fn svg_title_is_escaped() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("loss.svg");
        draw_loss(&path, &[0.5, 0.25], false, "a < b & c", ImageFormat::Svg).unwrap();

        let texts = read_svg_texts(&path);
        assert!(texts.contains(&"a &lt; b &amp; c".to_string()), "{texts:?}");
    }

    #[test]
    fn sums_invalid_input_errors() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("sums.png");

        let error = draw_sums(&path, &[], &[], &[], "Empty", ImageFormat::Png).unwrap_err();
        assert!(error.to_string().contains("no samples"), "{error}");

        let error =
            draw_sums(&path, &[1, 2], &[1], &[0, 1], "Mismatch", ImageFormat::Png).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("2 actual sums, 1 predicted sums and 2 labels"),
            "{error}"
        );

        let too_many = MAX_SUM_SAMPLES + 1;
        let sums = vec![1; too_many];
        let labels: Vec<usize> = (0..too_many).collect();
        let error =
            draw_sums(&path, &sums, &sums, &labels, "Too many", ImageFormat::Png).unwrap_err();
        assert!(error.to_string().contains("at most 20"), "{error}");

        assert!(leftover_files(directory.path()).is_empty());
    }

    #[test]
    fn parity_png_draws_both_panels() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("parity.png");
        let reference = decaying_losses(300);
        let ours: Vec<f64> = reference
            .iter()
            .enumerate()
            .map(|(i, r)| r + 1e-9 * (i % 7) as f64)
            .collect();
        draw_parity(
            &path,
            &reference,
            &ours,
            "Parity with TensorFlow",
            ImageFormat::Png,
        )
        .unwrap();

        let image = assert_drawn_png(&path, PARITY_CHART_SIZE);
        assert!(image.count(RED) > 300, "TensorFlow line missing");
        assert!(image.count(BLUE) > 300, "binadd line missing");
    }

    #[test]
    fn parity_identical_and_single_point() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("parity.png");
        let losses = decaying_losses(100);
        draw_parity(&path, &losses, &losses, "Identical runs", ImageFormat::Png).unwrap();
        assert_drawn_png(&path, PARITY_CHART_SIZE);

        draw_parity(&path, &[0.25], &[0.25], "One iteration", ImageFormat::Png).unwrap();
        assert_drawn_png(&path, PARITY_CHART_SIZE);
    }

    #[test]
    fn parity_svg_contains_text() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("parity.svg");
        draw_parity(
            &path,
            &[0.3, 0.2, f64::NAN],
            &[0.3, 0.21, 0.1],
            "Parity",
            ImageFormat::Svg,
        )
        .unwrap();

        let texts = read_svg_texts(&path);
        assert!(texts.contains(&"Parity".to_string()), "{texts:?}");
        assert!(texts.contains(&"TensorFlow".to_string()), "{texts:?}");
        assert!(texts.contains(&"binadd".to_string()), "{texts:?}");
        assert!(
            texts.contains(&"|difference| (zero drawn at 1e-18)".to_string()),
            "{texts:?}"
        );
    }

    #[test]
    fn parity_invalid_input_errors() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("parity.png");

        let error = draw_parity(&path, &[], &[0.1], "Empty", ImageFormat::Png).unwrap_err();
        assert!(error.to_string().contains("must be non-empty"), "{error}");

        let error =
            draw_parity(&path, &[0.1, 0.2], &[0.1], "Mismatch", ImageFormat::Png).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("2 TensorFlow losses but 1 binadd losses"),
            "{error}"
        );

        let error = draw_parity(
            &path,
            &[f64::NAN, 0.1],
            &[0.2, f64::NAN],
            "NaN",
            ImageFormat::Png,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("no iteration has a finite loss"),
            "{error}"
        );

        assert!(leftover_files(directory.path()).is_empty());
    }

    #[test]
    fn failed_draw_keeps_old_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("loss.png");
        fs::write(&path, b"previous chart").unwrap();

        draw_loss(&path, &[f64::NAN], false, "NaN", ImageFormat::Png).unwrap_err();
        assert_eq!(fs::read(&path).unwrap(), b"previous chart");

        draw_loss(&path, &[0.5, 0.25], false, "Loss", ImageFormat::Png).unwrap();
        assert_drawn_png(&path, LINE_CHART_SIZE);
        assert_eq!(leftover_files(directory.path()), vec!["loss.png"]);
    }

    #[test]
    fn missing_directory_errors() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("absent").join("loss.png");
        let error = draw_loss(&path, &[0.5, 0.25], false, "Loss", ImageFormat::Png).unwrap_err();

        assert!(
            error
                .to_string()
                .contains("failed to create a temporary file"),
            "{error}"
        );
        assert!(leftover_files(directory.path()).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn written_file_is_not_private() {
        use std::os::unix::fs::PermissionsExt;

        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("loss.svg");
        draw_loss(&path, &[0.5, 0.25], false, "Loss", ImageFormat::Svg).unwrap();

        let mode = fs::metadata(&path).unwrap().permissions().mode();
        // Owner read and write survive the usual umasks. Mode 0600 would mean the tempfile default leaked through.
        assert_eq!(mode & 0o600, 0o600);
        assert_ne!(mode & 0o777, 0o600, "mode {mode:o}");
    }

    /// Returns the bounding box (left, top, right, bottom) of the pixels of `colour`.
    fn bounding_box(image: &Decoded, colour: RGBColor) -> (u32, u32, u32, u32) {
        let expected = [colour.0, colour.1, colour.2];
        let mut bounds = (u32::MAX, u32::MAX, 0, 0);
        for (index, pixel) in image.pixels.iter().enumerate() {
            if *pixel == expected {
                let (x, y) = (index as u32 % image.width, index as u32 / image.width);
                bounds = (
                    bounds.0.min(x),
                    bounds.1.min(y),
                    bounds.2.max(x),
                    bounds.3.max(y),
                );
            }
        }
        bounds
    }

    #[test]
    fn noisy_line_stays_in_panel() {
        // Alternating losses reverse the line at every point, which made plotters draw spikes off the panel.
        let losses: Vec<f64> = (0..3000)
            .map(|i| if i % 2 == 0 { 0.2 } else { 0.01 })
            .collect();
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("noisy.png");
        draw_loss(&path, &losses, false, "Noisy loss", ImageFormat::Png).unwrap();

        let image = assert_drawn_png(&path, LINE_CHART_SIZE);
        let panel = bounding_box(&image, PANEL_GREY);
        let line = bounding_box(&image, BLUE);
        assert!(
            line.0 >= panel.0,
            "line {line:?} leaves panel {panel:?} on the left"
        );
        assert!(
            line.2 <= panel.2,
            "line {line:?} leaves panel {panel:?} on the right"
        );
        assert!(
            line.1 >= panel.1,
            "line {line:?} leaves panel {panel:?} at the top"
        );
        assert!(
            line.3 <= panel.3,
            "line {line:?} leaves panel {panel:?} at the bottom"
        );
    }

    #[test]
    fn parity_difference_stays_in_bottom_panel() {
        let reference: Vec<f64> = (0..2000).map(|i| 0.25 / (1.0 + i as f64 / 100.0)).collect();
        let ours: Vec<f64> = reference
            .iter()
            .enumerate()
            .map(|(i, r)| if i % 2 == 0 { *r } else { r * (1.0 + 1e-9) })
            .collect();
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("parity.png");
        draw_parity(&path, &reference, &ours, "Noisy parity", ImageFormat::Png).unwrap();

        let image = assert_drawn_png(&path, PARITY_CHART_SIZE);
        let difference = bounding_box(&image, PURPLE);
        // The top panel, title included, ends above the middle of the image.
        assert!(
            difference.1 > PARITY_CHART_SIZE.1 / 2,
            "difference line reaches y = {}",
            difference.1
        );
        assert!(
            difference.3 < PARITY_CHART_SIZE.1 - 40,
            "difference line reaches y = {}",
            difference.3
        );
    }

    #[test]
    fn column_extremes_keep_shape() {
        // Column 0 contains five points, and only its first, highest, lowest and last remain.
        let pixels = [
            (0, 5),
            (0, 1),
            (0, 3),
            (0, 9),
            (0, 4),
            (1, 2),
            (2, 2),
            (2, 2),
        ];
        assert_eq!(column_extremes(&pixels), vec![0, 1, 3, 4, 5, 6, 7]);
        assert_eq!(column_extremes(&[(4, 4)]), vec![0]);
        assert!(column_extremes(&[]).is_empty());
    }

    #[test]
    fn split_cuts_only_reversals() {
        // Straight and right-angle joints stay in one piece.
        assert_eq!(
            split_at_sharp_turns(&[(0, 0), (5, 0), (10, 0), (10, 5)]),
            vec![0..=3]
        );
        // A reversal at index 1, a repeated pixel at index 3, then a right-angle turn.
        let pieces = split_at_sharp_turns(&[(0, 0), (10, 0), (2, 1), (2, 1), (2, 9)]);
        assert_eq!(pieces, vec![0..=1, 1..=4]);
        // Two reversals in a row.
        let pieces = split_at_sharp_turns(&[(0, 0), (10, 0), (2, 1), (12, 2)]);
        assert_eq!(pieces, vec![0..=1, 1..=2, 2..=3]);
        assert_eq!(split_at_sharp_turns(&[(3, 3), (3, 3)]), vec![0..=1]);
    }

    #[test]
    fn legend_avoids_the_curve() {
        let panel_for = |losses: &[f64]| LinePanel {
            caption: None,
            y_desc: String::new(),
            axis: YAxis::fit(Scale::Linear, losses.iter().copied()).unwrap(),
            iterations: losses.len(),
            series: vec![LineSeriesData {
                name: Some("loss"),
                colour: BLUE,
                width: 2,
                runs: plottable_runs(losses, f64::is_finite),
            }],
        };
        let falling: Vec<f64> = (0..100).map(|i| 1.0 / (1.0 + i as f64)).collect();
        let rising: Vec<f64> = (0..100).map(|i| i as f64).collect();
        assert!(matches!(
            emptiest_corner(&panel_for(&falling)),
            SeriesLabelPosition::UpperRight
        ));
        assert!(matches!(
            emptiest_corner(&panel_for(&rising)),
            SeriesLabelPosition::LowerRight
        ));
    }

    /// Draws `text` in black on white in the tick font through [`GlyphTextBackend`] and returns,
    /// for each pixel column, the darkest value of ink in it, from 0 (blank) to 255 (full coverage).
    fn ink_by_column(text: &str) -> Vec<u8> {
        register_fonts().unwrap();
        let (width, height) = (200, 40);
        let mut pixels = vec![255u8; width * height * 3];
        {
            let bitmap = BitMapBackend::with_buffer(&mut pixels, (width as u32, height as u32));
            let mut backend = GlyphTextBackend { inner: bitmap };
            let style = (FONT, TICK_FONT_SIZE).into_font().color(&BLACK);
            backend.draw_text(text, &style, (10, 10)).unwrap();
        }
        (0..width)
            .map(|x| {
                (0..height)
                    .map(|y| 255 - pixels[(y * width + x) * 3])
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Returns the horizontal centre of the ink of each glyph in a column profile from [`ink_by_column`].
    ///
    /// Columns of at least a quarter coverage form a glyph, and the fainter column on each side
    /// adds its coverage as a fraction of a pixel, so the centres have sub-pixel precision.
    fn glyph_centres(ink: &[u8]) -> Vec<f64> {
        const INK: u8 = 64;
        // Columns outside the profile count as blank.
        let coverage = |column: Option<usize>| {
            column
                .and_then(|column| ink.get(column))
                .map_or(0.0, |&value| f64::from(value) / 255.0)
        };
        let mut centres = Vec::new();
        let mut column = 0;
        while column < ink.len() {
            if ink[column] < INK {
                column += 1;
                continue;
            }
            let start = column;
            while column < ink.len() && ink[column] >= INK {
                column += 1;
            }
            let left = start as f64 - coverage(start.checked_sub(1));
            let right = column as f64 + coverage(Some(column));
            centres.push((left + right) / 2.0);
        }
        centres
    }

    #[test]
    fn digit_labels_evenly_spaced() {
        // DejaVu Sans has tabular digits: every digit advances by the same width, and at 14 px the
        // centre of its ink lies within 0.2 px of the middle of that width. So the ink centres of
        // neighbouring digits lie one advance apart. The 1 px bound leaves room for that spread and for
        // the estimate of the centres. Drawn by plotters 0.3.7 itself, the "1" in "2185" sits 2.4 px off
        // and touches the "2".
        register_fonts().unwrap();
        let font = FontRef::try_from_slice(dejavu::sans::regular()).unwrap();
        let scaled = font.as_scaled(TICK_FONT_SIZE as f32);
        let advance = f64::from(scaled.h_advance(font.glyph_id('0')));

        for label in [
            "5301", "2185", "6172", "7491", "8081", "1227", "1111", "0000",
        ] {
            let centres = glyph_centres(&ink_by_column(label));
            assert_eq!(
                centres.len(),
                4,
                "{label}: expected 4 separate digits but found ink runs centred at {centres:?}, so some digits touch"
            );
            for (index, pair) in centres.windows(2).enumerate() {
                let spacing = pair[1] - pair[0];
                assert!(
                    (spacing - advance).abs() < 1.0,
                    "{label}: digits {index} and {} are {spacing:.2} px apart, but the advance is {advance:.2} px \
                     (centres {centres:?})",
                    index + 1
                );
            }
        }
    }

    #[test]
    fn log_axis_ticks_whole_decades() {
        let axis = YAxis::fit(Scale::Log, [0.25, 3e-4].into_iter()).unwrap();
        assert_eq!(axis.ticks, vec![-4.0, -3.0, -2.0, -1.0, 0.0]);
        assert!(axis.range.start < -4.0, "{:?}", axis.range);
        assert!(axis.range.end > 0.0, "{:?}", axis.range);

        let wide = YAxis::fit(Scale::Log, [1e-18, 0.5].into_iter()).unwrap();
        assert!(
            wide.ticks.len() <= MAX_LOG_TICKS as usize + 1,
            "{:?}",
            wide.ticks
        );
        assert_eq!(wide.ticks.first(), Some(&-18.0));

        let flat = YAxis::fit(Scale::Log, [0.1, 0.1].into_iter()).unwrap();
        assert_eq!(flat.ticks, vec![-2.0, -1.0, 0.0]);
    }

    #[test]
    fn tick_labels_readable() {
        assert_eq!(log_tick_label(-2.0), "0.01");
        assert_eq!(log_tick_label(0.0), "1");
        assert_eq!(log_tick_label(2.0), "100");
        assert_eq!(log_tick_label(-18.0), "1e-18");
        assert_eq!(linear_tick_label(0.05, 0.05, 0.3), "0.05");
        assert_eq!(linear_tick_label(-0.0, 0.05, 0.3), "0.00");
        assert_eq!(linear_tick_label(150.0, 50.0, 300.0), "150");
        assert_eq!(linear_tick_label(0.25035, 5e-5, 0.2504), "0.25035");
        assert_eq!(linear_tick_label(1.05e-5, 5e-7, 1.1e-5), "1.05e-5");
        assert_eq!(linear_tick_label(2e6, 1e6, 5e6), "2e6");
    }

    #[test]
    fn linear_axis_spans_equal_values() {
        let zero = YAxis::fit(Scale::Linear, [0.0, 0.0].into_iter()).unwrap();
        assert!(zero.range.start < 0.0, "{:?}", zero.range);
        assert!(zero.range.end > 0.0, "{:?}", zero.range);
        assert!(zero.ticks.len() >= 2, "{:?}", zero.ticks);

        let flat = YAxis::fit(Scale::Linear, [0.125; 3].into_iter()).unwrap();
        assert!(flat.range.start < 0.125, "{:?}", flat.range);
        assert!(flat.range.end > 0.125, "{:?}", flat.range);
        assert!(flat.ticks.len() >= 2, "{:?}", flat.ticks);

        // A difference in the last bits of the mantissa counts as equal.
        let nearly = YAxis::fit(Scale::Linear, [0.1, 0.1 + 1e-17].into_iter()).unwrap();
        let labels: HashSet<String> = nearly.ticks.iter().map(|t| nearly.tick_label(*t)).collect();
        assert_eq!(
            labels.len(),
            nearly.ticks.len(),
            "repeated tick labels: {labels:?}"
        );
    }
}
