//! PNG line and scatter plots: loss and learning-rate curves, sweep metrics, per-trial curves.
//!
//! One entry point per kind, [`plot_lines`] and [`plot_scatter`], both taking a [`Plot`] of
//! plain numbers. Drawing is plotters' bitmap backend into a memory buffer, text is rendered
//! with an embedded subset of DejaVu Sans through `ab_glyph`, the PNG is encoded with the `png`
//! crate and written atomically (temporary file + rename).
//!
//! Bad data never fails a plot: points with a NaN or infinite coordinate are skipped, as are
//! non-positive values on a log axis and magnitudes no axis maths can span (beyond ±1e150 on a
//! linear axis, outside [1e-300, 1e300] on a log axis). An empty plot still gets its axes,
//! title and legend.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::ranged1d::{AsRangedCoord, DefaultFormatting, KeyPointHint, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{ReportError, Result};
use crate::fs::write_atomic;

/// Default image size in pixels, as ms-swift's `plot_images` (matplotlib `figsize=(8, 5)`, dpi 100).
pub const DEFAULT_SIZE: (u32, u32) = (800, 500);

/// Smallest and largest accepted image side, in pixels.
const MIN_SIDE: u32 = 160;
const MAX_SIDE: u32 = 8192;

/// The font family name every text style below refers to; [`ensure_font`] registers it.
const FONT: &str = "sans-serif";
// Text sizes in pixels. Keep them even: plotters' ab_glyph path places each glyph at
// `(size / 2 + top) as i32`, and with an odd size that truncation rounds tall glyphs down and
// short ones (`.`, `,`) up, so a decimal point floats one pixel above the baseline.
const TITLE_PX: f64 = 22.0;
const AXIS_DESC_PX: f64 = 16.0;
const TICK_PX: f64 = 14.0;
const LEGEND_PX: f64 = 14.0;
/// Legend row height in pixels for [`LEGEND_PX`] text (plotters spaces rows by the text height
/// plus padding); used to decide how many entries fit and where the legend goes.
const LEGEND_ROW_PX: f64 = 21.0;

/// DejaVu Sans reduced to Latin-1, a few punctuation marks and Greek lower case;
/// licence and regeneration command in `assets/fonts/README.md`.
static FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-subset.ttf");

/// matplotlib's `tab10` palette: distinct colours that survive colour-blindness reasonably.
const PALETTE: [(u8, u8, u8); 10] = [
    (0x1f, 0x77, 0xb4),
    (0xff, 0x7f, 0x0e),
    (0x2c, 0xa0, 0x2c),
    (0xd6, 0x27, 0x28),
    (0x94, 0x67, 0xbd),
    (0x8c, 0x56, 0x4b),
    (0xe3, 0x77, 0xc2),
    (0x7f, 0x7f, 0x7f),
    (0xbc, 0xbd, 0x22),
    (0x17, 0xbe, 0xcf),
];

/// How a series is drawn by [`plot_lines`]. [`plot_scatter`] draws every series as markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeriesStyle {
    /// Points joined in the order given (sort by x first for a curve).
    #[default]
    Line,
    /// One filled circle per point.
    Markers,
}

/// One named set of (x, y) points.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Legend text; an empty name leaves the series out of the legend.
    pub name: String,
    /// Points in drawing order. Non-finite coordinates are skipped.
    pub points: Vec<(f64, f64)>,
    pub style: SeriesStyle,
    /// Indices into `points` drawn with a distinct cross marker (for example the last
    /// intermediate eval of a pruned trial). Out-of-range indices are ignored.
    pub marked: Vec<usize>,
    /// Fixed colour `(r, g, b)`; `None` takes the next palette colour.
    pub color: Option<(u8, u8, u8)>,
}

impl Series {
    /// A series drawn as a line.
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, style: SeriesStyle::Line, ..Series::default() }
    }

    /// A series drawn as markers.
    pub fn markers(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, style: SeriesStyle::Markers, ..Series::default() }
    }

    /// Marks the points at `indices` (see [`Series::marked`]).
    pub fn with_marked(mut self, indices: Vec<usize>) -> Self {
        self.marked = indices;
        self
    }

    /// Fixes the series colour (see [`Series::color`]).
    pub fn with_color(mut self, rgb: (u8, u8, u8)) -> Self {
        self.color = Some(rgb);
        self
    }
}

/// A whole chart: titles, series and axis scales.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Logarithmic x axis (for example a learning-rate sweep). Points with x <= 0 are skipped.
    pub log_x: bool,
    /// Logarithmic y axis. Points with y <= 0 are skipped.
    pub log_y: bool,
    /// Legend text for the cross marker of [`Series::marked`] points (for example "pruned");
    /// empty for no legend entry.
    pub marked_label: String,
    /// Image `(width, height)` in pixels, each within 160..=8192.
    pub size: (u32, u32),
}

impl Default for Plot {
    fn default() -> Self {
        Plot {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series: Vec::new(),
            log_x: false,
            log_y: false,
            marked_label: String::new(),
            size: DEFAULT_SIZE,
        }
    }
}

/// Draws `plot` to the PNG file `path`, each series in its own [`SeriesStyle`]. Creates the
/// parent folder if needed and replaces `path` atomically.
pub fn plot_lines(path: impl AsRef<Path>, plot: &Plot) -> Result<()> {
    render_to_file(path.as_ref(), plot, Mode::AsStyled)
}

/// Like [`plot_lines`], but every series is drawn as markers whatever its style: for
/// metric-versus-parameter plots where the point order means nothing.
pub fn plot_scatter(path: impl AsRef<Path>, plot: &Plot) -> Result<()> {
    render_to_file(path.as_ref(), plot, Mode::AllMarkers)
}

/// ms-swift's image name for a logged tag: `train/loss` → `train_loss.png`.
pub fn image_file_name(tag: &str) -> String {
    format!("{}.png", tag.replace('/', "_"))
}

/// TensorBoard's (and ms-swift's `tensorboard_smoothing`) debiased exponential moving average:
/// `s_i = (Σ_j w^(i-j) v_j) / (Σ_j w^(i-j))` with `weight` = w in [0, 1); ms-swift smooths
/// `train/loss` with 0.9. Non-finite values pass through unsmoothed and do not disturb the
/// average, as in TensorBoard.
pub fn tensorboard_smoothing(values: &[f64], weight: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut norm = 0.0;
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                return v;
            }
            acc = acc * weight + v;
            norm = norm * weight + 1.0;
            acc / norm
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    AsStyled,
    AllMarkers,
}

/// A series after cleaning: only drawable points, each with its index in `Series::points`.
struct Prepared<'a> {
    series: &'a Series,
    color: RGBColor,
    style: SeriesStyle,
    /// `(index in Series::points, x, y)`, drawable points only.
    points: Vec<(usize, f64, f64)>,
}

impl Prepared<'_> {
    fn xy(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.points.iter().map(|&(_, x, y)| (x, y))
    }

    /// Maximal runs of points that were consecutive in `Series::points` (nothing skipped between).
    fn runs(&self) -> impl Iterator<Item = &[(usize, f64, f64)]> + '_ {
        self.points.chunk_by(|a, b| b.0 == a.0 + 1)
    }

    fn marked_xy(&self) -> Vec<(f64, f64)> {
        // Marked indices refer to the original points; look them up among the kept ones
        // (sorted by index), so a marked NaN point is skipped like any other.
        self.series
            .marked
            .iter()
            .filter_map(|&m| self.points.binary_search_by_key(&m, |p| p.0).ok().map(|k| (self.points[k].1, self.points[k].2)))
            .collect()
    }
}

fn render_to_file(path: &Path, plot: &Plot, mode: Mode) -> Result<()> {
    let (w, h) = plot.size;
    if !(MIN_SIDE..=MAX_SIDE).contains(&w) || !(MIN_SIDE..=MAX_SIDE).contains(&h) {
        return Err(ReportError::InvalidPlot {
            path: path.to_path_buf(),
            message: format!("size {w}x{h} pixels; each side must be within {MIN_SIDE}..={MAX_SIDE}"),
        });
    }
    let rgb = render_rgb(plot, mode).map_err(|message| ReportError::Draw { path: path.to_path_buf(), message })?;
    let png = encode_png(&rgb, w, h).map_err(|source| ReportError::PngEncode { path: path.to_path_buf(), source })?;
    write_atomic(path, &png)
}

/// Renders `plot` into an RGB8 buffer of `size.0 * size.1 * 3` bytes.
fn render_rgb(plot: &Plot, mode: Mode) -> std::result::Result<Vec<u8>, String> {
    if !ensure_font() {
        return Err("the embedded font failed to load".to_string());
    }
    let prepared: Vec<Prepared> = plot
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (r, g, b) = s.color.unwrap_or(PALETTE[i % PALETTE.len()]);
            let points = s
                .points
                .iter()
                .enumerate()
                .filter(|(_, &(x, y))| drawable(x, plot.log_x) && drawable(y, plot.log_y))
                .map(|(j, &(x, y))| (j, x, y))
                .collect();
            let style = if mode == Mode::AllMarkers { SeriesStyle::Markers } else { s.style };
            Prepared { series: s, color: RGBColor(r, g, b), style, points }
        })
        .collect();
    let x_axis = Axis::fit(prepared.iter().flat_map(|p| p.xy().map(|(x, _)| x)), plot.log_x);
    let y_axis = Axis::fit(prepared.iter().flat_map(|p| p.xy().map(|(_, y)| y)), plot.log_y);

    let (w, h) = plot.size;
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        // Four coordinate-type combinations, one generic body.
        let (xr, yr) = (x_axis.lo..x_axis.hi, y_axis.lo..y_axis.hi);
        let (xl, yl) = (LogAxis { lo: x_axis.lo, hi: x_axis.hi }, LogAxis { lo: y_axis.lo, hi: y_axis.hi });
        match (plot.log_x, plot.log_y) {
            (false, false) => draw_chart(&root, plot, &prepared, &x_axis, &y_axis, xr, yr),
            (true, false) => draw_chart(&root, plot, &prepared, &x_axis, &y_axis, xl, yr),
            (false, true) => draw_chart(&root, plot, &prepared, &x_axis, &y_axis, xr, yl),
            (true, true) => draw_chart(&root, plot, &prepared, &x_axis, &y_axis, xl, yl),
        }?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

fn draw_chart<XS, YS>(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    plot: &Plot,
    prepared: &[Prepared],
    x_axis: &Axis,
    y_axis: &Axis,
    x_spec: XS,
    y_spec: YS,
) -> std::result::Result<(), String>
where
    XS: AsRangedCoord<Value = f64>,
    YS: AsRangedCoord<Value = f64>,
    XS::CoordDescType: ValueFormatter<f64>,
    YS::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<<BitMapBackend<'_> as DrawingBackend>::ErrorType>| e.to_string();
    let x_fmt = |v: &f64| x_axis.format_tick(*v);
    let y_fmt = |v: &f64| y_axis.format_tick(*v);

    let (x_area, y_area) = label_areas(plot, y_axis);
    let mut builder = ChartBuilder::on(root);
    builder.margin(14).margin_right(24).x_label_area_size(x_area).y_label_area_size(y_area);
    if !plot.title.is_empty() {
        builder.caption(&plot.title, (FONT, TITLE_PX));
    }
    let mut chart = builder.build_cartesian_2d(x_spec, y_spec).map_err(err)?;

    chart
        .configure_mesh()
        .x_desc(plot.x_label.as_str())
        .y_desc(plot.y_label.as_str())
        .x_labels(8)
        .y_labels(7)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, TICK_PX))
        .axis_desc_style((FONT, AXIS_DESC_PX))
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(TRANSPARENT)
        .axis_style(RGBColor(60, 60, 60))
        .draw()
        .map_err(err)?;

    let plot_h = chart.plotting_area().dim_in_pixel().1 as f64;
    let plot_w = chart.plotting_area().dim_in_pixel().0 as f64;
    let LegendRows { labelled, hidden, show_marked_row } = legend_rows(plot, prepared, plot_h);

    for (i, p) in prepared.iter().enumerate() {
        let color = p.color;
        let label = labelled.contains(&i).then(|| p.series.name.clone());
        let anno = match p.style {
            SeriesStyle::Line => {
                // Skipped points break the line (as in matplotlib) instead of being bridged.
                for run in p.runs() {
                    // A one-point run would be invisible: give it a marker.
                    if run.len() == 1 {
                        chart.draw_series(run.iter().map(|&(_, x, y)| Circle::new((x, y), 4, color.filled()))).map_err(err)?;
                    } else {
                        chart.draw_series(LineSeries::new(run.iter().map(|&(_, x, y)| (x, y)), color.stroke_width(2))).map_err(err)?;
                    }
                }
                // The legend entry rides on an empty series, so that it exists even with no points.
                let anno = chart.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>()).map_err(err)?;
                if label.is_some() {
                    anno.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
                }
                anno
            }
            SeriesStyle::Markers => {
                let anno = chart.draw_series(p.xy().map(|xy| Circle::new(xy, 4, color.filled()))).map_err(err)?;
                if label.is_some() {
                    anno.legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
                }
                anno
            }
        };
        if let Some(label) = label {
            anno.label(label);
        }
    }
    // Marked points on top of every series, so that no curve hides them.
    for p in prepared {
        let color = p.color;
        chart.draw_series(p.marked_xy().into_iter().map(|xy| Cross::new(xy, 6, color.stroke_width(3)))).map_err(err)?;
    }
    let mut legend_labels: Vec<String> = labelled.iter().map(|&i| prepared[i].series.name.clone()).collect();
    if hidden > 0 {
        let text = format!("… and {hidden} more");
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(err)?
            .label(text.clone())
            .legend(|(x, y)| EmptyElement::at((x, y)));
        legend_labels.push(text);
    }
    if show_marked_row {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(err)?
            .label(plot.marked_label.clone())
            .legend(|(x, y)| Cross::new((x + 10, y), 6, BLACK.stroke_width(3)));
        legend_labels.push(plot.marked_label.clone());
    }

    if !legend_labels.is_empty() {
        let widest = legend_labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as f64;
        let legend_w = (widest * LEGEND_PX * 0.6 + 50.0) / plot_w;
        let legend_h = (legend_labels.len() as f64 * LEGEND_ROW_PX + 16.0) / plot_h;
        let position = best_legend_corner(prepared, x_axis, y_axis, legend_w, legend_h);
        chart
            .configure_series_labels()
            .position(position)
            .margin(10)
            .legend_area_size(24)
            .label_font((FONT, LEGEND_PX))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Pixels for the x and y label areas: the widest y tick label plus the rotated y description,
/// one row of x ticks plus the x description.
fn label_areas(plot: &Plot, y_axis: &Axis) -> (u32, u32) {
    let y_label_width =
        [y_axis.lo, y_axis.hi, (y_axis.lo + y_axis.hi) / 2.0].iter().map(|v| y_axis.format_tick(*v).chars().count()).max().unwrap_or(1)
            as f64
            * TICK_PX
            * 0.62;
    let y_area = (y_label_width + 16.0 + if plot.y_label.is_empty() { 0.0 } else { AXIS_DESC_PX + 8.0 }) as u32;
    let x_area = (TICK_PX + 14.0 + if plot.x_label.is_empty() { 0.0 } else { AXIS_DESC_PX + 10.0 }) as u32;
    (x_area, y_area)
}

/// Which series the legend names.
struct LegendRows {
    /// Indices of the named series given a legend row.
    labelled: Vec<usize>,
    /// Named series left out (one "… and N more" row stands for them).
    hidden: usize,
    /// A row for the marked-point cross.
    show_marked_row: bool,
}

/// Legend rows: named series first, then one for the marked-point cross, capped to what fits
/// in a plotting area `plot_h` pixels high (the rest collapse into one "… and N more" row).
fn legend_rows(plot: &Plot, prepared: &[Prepared], plot_h: f64) -> LegendRows {
    let any_marked = prepared.iter().any(|p| !p.marked_xy().is_empty());
    let show_marked_row = any_marked && !plot.marked_label.is_empty();
    let named: Vec<usize> = (0..prepared.len()).filter(|&i| !prepared[i].series.name.is_empty()).collect();
    let max_rows = (((plot_h - 20.0) / LEGEND_ROW_PX).floor() as usize).max(1);
    let reserved = usize::from(show_marked_row);
    let (shown, hidden) = if named.len() + reserved <= max_rows {
        (named.len(), 0)
    } else {
        let shown = max_rows.saturating_sub(reserved + 1);
        (shown, named.len() - shown)
    };
    LegendRows { labelled: named[..shown].to_vec(), hidden, show_marked_row }
}

/// The corner whose legend-sized box covers the fewest data points (matplotlib's `loc="best"`,
/// simplified). Lines are sampled between points so that a steep segment counts too.
/// `box_w`, `box_h`: legend size as fractions of the plotting area.
fn best_legend_corner(prepared: &[Prepared], x_axis: &Axis, y_axis: &Axis, box_w: f64, box_h: f64) -> SeriesLabelPosition {
    const SAMPLES_PER_SEGMENT: usize = 8;
    // (position, x range, y range) in the unit square, y pointing up.
    let corners = [
        (SeriesLabelPosition::UpperRight, (1.0 - box_w, 1.0), (1.0 - box_h, 1.0)),
        (SeriesLabelPosition::UpperLeft, (0.0, box_w), (1.0 - box_h, 1.0)),
        (SeriesLabelPosition::LowerRight, (1.0 - box_w, 1.0), (0.0, box_h)),
        (SeriesLabelPosition::LowerLeft, (0.0, box_w), (0.0, box_h)),
    ];
    let mut counts = [0usize; 4];
    let mut visit = |u: f64, v: f64| {
        for (k, (_, (x0, x1), (y0, y1))) in corners.iter().enumerate() {
            if u >= *x0 && u <= *x1 && v >= *y0 && v <= *y1 {
                counts[k] += 1;
            }
        }
    };
    for p in prepared {
        for run in p.runs() {
            let unit: Vec<(f64, f64)> = run.iter().map(|&(_, x, y)| (x_axis.unit(x), y_axis.unit(y))).collect();
            for &(u, v) in &unit {
                visit(u, v);
            }
            if p.style == SeriesStyle::Line {
                for pair in unit.windows(2) {
                    let ((u0, v0), (u1, v1)) = (pair[0], pair[1]);
                    for s in 1..SAMPLES_PER_SEGMENT {
                        let t = s as f64 / SAMPLES_PER_SEGMENT as f64;
                        visit(u0 + (u1 - u0) * t, v0 + (v1 - v0) * t);
                    }
                }
            }
        }
    }
    // Ties keep the earlier corner: upper right first, as most plotting libraries default to.
    let best = (0..4).min_by_key(|&k| counts[k]).unwrap_or(0);
    corners[best].0.clone()
}

/// Whether a coordinate can be drawn on a linear or log axis.
fn drawable(v: f64, log: bool) -> bool {
    if log {
        v.is_finite() && (1e-300..=1e300).contains(&v)
    } else {
        v.is_finite() && v.abs() <= 1e150
    }
}

/// One axis: its data range (already padded) and how to label it.
#[derive(Debug, Clone, Copy)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    /// Fits an axis to `values` (all drawable) with 5% padding, measured in decades on a log
    /// axis; a single value gets ±10% (linear) or ±half a decade (log).
    fn fit(values: impl Iterator<Item = f64>, log: bool) -> Axis {
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            min = min.min(v);
            max = max.max(v);
        }
        let empty = min > max;
        if log {
            if empty {
                return Axis { lo: 1.0, hi: 10.0, log };
            }
            let (lo, hi) = (min.log10(), max.log10());
            let span = hi - lo;
            let pad = if span < 1e-9 { 0.5 } else { span * 0.05 };
            return Axis { lo: 10f64.powf((lo - pad).max(-305.0)), hi: 10f64.powf((hi + pad).min(305.0)), log };
        }
        if empty {
            return Axis { lo: 0.0, hi: 1.0, log };
        }
        let max_abs = min.abs().max(max.abs());
        if max_abs < 1e-100 {
            // All (near) zero: a symmetric unit range around 0.
            return Axis { lo: -1.0, hi: 1.0, log };
        }
        let span = max - min;
        // Below a relative span of 1e-9 tick maths runs out of f64 digits: treat as constant.
        if span <= max_abs * 1e-9 {
            let centre = (min + max) / 2.0;
            let pad = centre.abs() * 0.1;
            return Axis { lo: centre - pad, hi: centre + pad, log };
        }
        let pad = span * 0.05;
        Axis { lo: min - pad, hi: max + pad, log }
    }

    /// Position of `v` in the axis as a fraction: 0 at `lo`, 1 at `hi`.
    fn unit(&self, v: f64) -> f64 {
        if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    /// A short tick label: enough digits to tell neighbouring ticks apart, no float noise
    /// (`0.30000000000000004` → `0.3`), scientific notation for very small or large values.
    fn format_tick(&self, v: f64) -> String {
        if self.log {
            // Enough digits for neighbouring ticks of a narrow range (1.1, 1.2, …) to differ;
            // one notation for the whole axis.
            let digits = ((self.hi / (self.hi - self.lo)).log10().ceil() + 2.0).clamp(3.0, 12.0) as usize;
            return if self.lo < 1e-3 || self.hi >= 1e5 { format_scientific(v, digits) } else { format_plain(v, digits) };
        }
        let span = self.hi - self.lo;
        if v.abs() < span * 1e-9 {
            return "0".to_string();
        }
        let max_abs = self.lo.abs().max(self.hi.abs());
        if !(1e-3..1e6).contains(&max_abs) {
            // Significant digits needed so that ticks a span/10 apart differ.
            let digits = ((max_abs / span).log10().ceil() + 2.0).clamp(2.0, 12.0) as usize;
            return format_scientific(v, digits);
        }
        let decimals = ((-span.log10()).ceil() + 2.0).clamp(0.0, 12.0) as usize;
        trim_fraction(format!("{v:.decimals$}"))
    }
}

/// `v` in positional notation with at most `digits` significant digits.
fn format_plain(v: f64, digits: usize) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".to_string();
    }
    let decimals = (digits as i32 - 1 - a.log10().floor() as i32).clamp(0, 20) as usize;
    trim_fraction(format!("{v:.decimals$}"))
}

/// A logarithmic axis with its own tick choice. plotters' log axis puts ticks only at powers
/// of ten and their multiples, and none at all when the range lies inside one decade.
#[derive(Debug, Clone, Copy)]
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl Ranged for LogAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = (value.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10());
        // A NaN position (never produced for drawable values) casts to 0 rather than panicking.
        limit.0 + (f64::from(limit.1 - limit.0) * t).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        log_ticks(self.lo, self.hi, hint.max_num_points())
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Ticks for a log axis over `[lo, hi]` (0 < lo < hi), at most `max` of them: the densest of
/// 1–9, 1-2-5 and 1 times powers of ten that fits, every n-th power of ten for very wide ranges,
/// and evenly spaced round numbers when the range is too narrow for any of these.
fn log_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    let max = max.max(2);
    let inside = |v: f64| v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9);
    let (k0, k1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let with_mantissas = |mantissas: &[f64]| -> Vec<f64> {
        (k0..=k1).flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k))).filter(|&v| inside(v)).collect()
    };
    for mantissas in [&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0][..], &[1.0, 2.0, 5.0], &[1.0]] {
        let ticks = with_mantissas(mantissas);
        if ticks.len() <= max && ticks.len() >= 2 {
            return ticks;
        }
        if ticks.len() > max && mantissas.len() == 1 {
            // More decades than ticks: every `stride`-th power of ten.
            let stride = ticks.len().div_ceil(max) as i32;
            return (k0..=k1).filter(|k| k.rem_euclid(stride) == 0).map(|k| 10f64.powi(k)).filter(|&v| inside(v)).collect();
        }
    }
    linear_ticks(lo, hi, max)
}

/// At most `max` round ticks (1, 2 or 5 times a power of ten apart) within `[lo, hi]`.
fn linear_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    let raw = (hi - lo) / max.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&s| s >= raw).unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil();
    (0..=max).map(|i| (first + i as f64) * step).take_while(|&v| v <= hi).collect()
}

/// `1.50e-4` style with `digits` significant digits, trailing zeros trimmed: `1.5e-4`.
fn format_scientific(v: f64, digits: usize) -> String {
    let s = format!("{:.*e}", digits.saturating_sub(1), v);
    match s.split_once('e') {
        Some((mantissa, exp)) => format!("{}e{exp}", trim_fraction(mantissa.to_string())),
        None => s,
    }
}

/// Drops trailing zeros of a decimal fraction, and the point if nothing follows it.
fn trim_fraction(mut s: String) -> String {
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" {
        s = "0".to_string();
    }
    s
}

/// Registers the embedded font under [`FONT`] once per process; false if it does not parse.
fn ensure_font() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok())
}

/// Encodes an RGB8 buffer as a PNG file in memory.
fn encode_png(rgb: &[u8], w: u32, h: u32) -> std::result::Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::with_capacity(rgb.len() / 8);
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(rgb)?;
        writer.finish()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_font_loads() {
        assert!(ensure_font());
    }

    #[test]
    fn image_names_follow_ms_swift() {
        assert_eq!(image_file_name("train/loss"), "train_loss.png");
        assert_eq!(image_file_name("eval/loss"), "eval_loss.png");
        assert_eq!(image_file_name("train/learning_rate"), "train_learning_rate.png");
    }

    #[test]
    fn smoothing_is_debiased_ema() {
        let s = tensorboard_smoothing(&[1.0, 2.0, 3.0], 0.5);
        assert_eq!(s[0], 1.0);
        assert!((s[1] - (0.5 * 1.0 + 2.0) / 1.5).abs() < 1e-12);
        assert!((s[2] - (0.25 * 1.0 + 0.5 * 2.0 + 3.0) / 1.75).abs() < 1e-12);
        // Weight 0 is no smoothing; non-finite values pass through without poisoning the rest.
        assert_eq!(tensorboard_smoothing(&[4.0, 5.0], 0.0), vec![4.0, 5.0]);
        let s = tensorboard_smoothing(&[1.0, f64::NAN, 1.0], 0.9);
        assert_eq!(s[0], 1.0);
        assert!(s[1].is_nan());
        assert!((s[2] - 1.0).abs() < 1e-12);
        assert!(tensorboard_smoothing(&[], 0.9).is_empty());
    }

    #[test]
    fn tick_labels_are_short() {
        let lin = |lo, hi| Axis { lo, hi, log: false };
        assert_eq!(lin(0.0, 1.0).format_tick(0.30000000000000004), "0.3");
        assert_eq!(lin(0.0, 1.0).format_tick(1e-17), "0");
        assert_eq!(lin(0.0, 1000.0).format_tick(200.0), "200");
        assert_eq!(lin(2.1, 2.4).format_tick(2.15), "2.15");
        assert_eq!(lin(0.0, 2e-4).format_tick(5e-5), "5e-5");
        assert_eq!(lin(0.0, 2e-4).format_tick(1.5000000000000002e-4), "1.5e-4");
        assert_eq!(lin(0.0, 2e6).format_tick(1.5e6), "1.5e6");
        assert_eq!(lin(-1.0, 1.0).format_tick(-0.5), "-0.5");
        let log = Axis { lo: 1e-5, hi: 1e-3, log: true };
        assert_eq!(log.format_tick(3.0000000000000004e-5), "3e-5");
        assert_eq!(log.format_tick(1e-3), "1e-3");
        let log = Axis { lo: 0.01, hi: 100.0, log: true };
        assert_eq!(log.format_tick(0.01), "0.01");
        assert_eq!(log.format_tick(1.0000000000000002), "1");
        assert_eq!(log.format_tick(50.0), "50");
        let log = Axis { lo: 1.0, hi: 1e6, log: true };
        assert_eq!(log.format_tick(1e6), "1e6");
        let log = Axis { lo: 1.1, hi: 1.3, log: true };
        assert_eq!(log.format_tick(1.15), "1.15");
    }

    #[test]
    fn log_ticks_always_label_the_axis() {
        let close = |a: &[f64], b: &[f64]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-9 * y.abs());
        // Two decades: 1-2-5 fits in 8.
        let t = log_ticks(0.8e-5, 1.2e-3, 8);
        assert!(close(&t, &[1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3]), "{t:?}");
        // Inside one decade: 1..9 mantissas.
        let t = log_ticks(2e-5, 8e-5, 8);
        assert!(close(&t, &[2e-5, 3e-5, 4e-5, 5e-5, 6e-5, 7e-5, 8e-5]), "{t:?}");
        // Many decades: every other power of ten.
        let t = log_ticks(1e-10, 1e10, 8);
        assert!(t.len() <= 8 && t.len() >= 4, "{t:?}");
        assert!(t.iter().all(|v| (v.log10().round() - v.log10()).abs() < 1e-9), "{t:?}");
        // Narrower than one mantissa step: round linear ticks.
        let t = log_ticks(1.11, 1.19, 8);
        assert!(t.len() >= 2 && t.iter().all(|&v| (1.11..=1.19).contains(&v)), "{t:?}");
        // Extremes do not hang or panic.
        assert!(!log_ticks(1e-305, 1e305, 8).is_empty());
        let t = log_ticks(1.0, 1.0 + 1e-12, 8);
        assert!(t.len() <= 9, "{t:?}");
    }

    #[test]
    fn axes_fit_data() {
        let a = Axis::fit([1.0, 3.0].into_iter(), false);
        assert!((a.lo - 0.9).abs() < 1e-12 && (a.hi - 3.1).abs() < 1e-12);
        let a = Axis::fit(std::iter::empty(), false);
        assert_eq!((a.lo, a.hi), (0.0, 1.0));
        let a = Axis::fit([5.0].into_iter(), false);
        assert!(a.lo < 5.0 && a.hi > 5.0);
        let a = Axis::fit([0.0, 0.0].into_iter(), false);
        assert_eq!((a.lo, a.hi), (-1.0, 1.0));
        let a = Axis::fit([1e-5, 1e-3].into_iter(), true);
        assert!((a.lo.log10() + 5.1).abs() < 1e-9 && (a.hi.log10() + 2.9).abs() < 1e-9, "{a:?}");
        let a = Axis::fit([1e-4].into_iter(), true);
        assert!((a.lo.log10() + 4.5).abs() < 1e-9 && (a.hi.log10() + 3.5).abs() < 1e-9, "{a:?}");
        let a = Axis::fit(std::iter::empty(), true);
        assert_eq!((a.lo, a.hi), (1.0, 10.0));
    }

    #[test]
    fn legend_avoids_the_data() {
        // A decreasing loss curve fills the upper left and lower right: pick the upper right.
        let s = Series::line("loss", (0..50).map(|i| (i as f64, 1.0 / (1.0 + i as f64))).collect());
        let p = Prepared {
            series: &s,
            color: BLACK,
            style: SeriesStyle::Line,
            points: s.points.iter().enumerate().map(|(i, &(x, y))| (i, x, y)).collect(),
        };
        let (xa, ya) = (Axis::fit(p.xy().map(|q| q.0), false), Axis::fit(p.xy().map(|q| q.1), false));
        assert_eq!(best_legend_corner(std::slice::from_ref(&p), &xa, &ya, 0.2, 0.2), SeriesLabelPosition::UpperRight);
        // A warmup-then-flat learning rate fills the top: go to the bottom.
        let s = Series::line("lr", (0..50).map(|i| (i as f64, if i < 5 { i as f64 / 5.0 } else { 1.0 })).collect());
        let p = Prepared {
            series: &s,
            color: BLACK,
            style: SeriesStyle::Line,
            points: s.points.iter().enumerate().map(|(i, &(x, y))| (i, x, y)).collect(),
        };
        let (xa, ya) = (Axis::fit(p.xy().map(|q| q.0), false), Axis::fit(p.xy().map(|q| q.1), false));
        assert_eq!(best_legend_corner(std::slice::from_ref(&p), &xa, &ya, 0.2, 0.2), SeriesLabelPosition::LowerRight);
    }
}
