//! PNG plots: every file decodes with the requested size, is not blank, and bad input (empty
//! series, single points, NaN, infinities, extreme magnitudes, too many series) never panics.

use std::collections::HashSet;
use std::path::Path;

use qtrain_report::{image_file_name, plot_lines, plot_scatter, tensorboard_smoothing, Plot, ReportError, Series, SeriesStyle};

/// tab10 blue and green: the palette colours of the first and third series.
const BLUE: [u8; 3] = [0x1f, 0x77, 0xb4];
const GREEN: [u8; 3] = [0x2c, 0xa0, 0x2c];

struct Image {
    width: u32,
    height: u32,
    /// RGB8, row-major.
    rgb: Vec<u8>,
}

impl Image {
    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    fn distinct_colours(&self) -> usize {
        self.rgb.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect::<HashSet<_>>().len()
    }

    fn count(&self, colour: [u8; 3]) -> usize {
        self.rgb.chunks_exact(3).filter(|c| *c == colour).count()
    }

    /// Pixels darker than light grey inside rows `y0..y1`: text and axes, not grid lines.
    fn dark_pixels_in_rows(&self, y0: u32, y1: u32) -> usize {
        (y0..y1).flat_map(|y| (0..self.width).map(move |x| (x, y))).filter(|&(x, y)| self.pixel(x, y).iter().all(|&c| c < 128)).count()
    }
}

fn decode(path: &Path) -> Image {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().expect("valid PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size fits in memory")];
    let info = reader.next_frame(&mut buf).expect("valid PNG data");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    Image { width: info.width, height: info.height, rgb: buf }
}

/// Decodes `path`, checks its size against `plot.size` and that it is far from blank.
fn check_png(path: &Path, plot: &Plot) -> Image {
    let img = decode(path);
    assert_eq!((img.width, img.height), plot.size, "{}", path.display());
    // White background, grey grid, dark axes and anti-aliased text: many colours.
    assert!(img.distinct_colours() >= 8, "{}: only {} colours", path.display(), img.distinct_colours());
    img
}

fn loss_curve(n: usize, scale: f64) -> Vec<(f64, f64)> {
    (0..n).map(|i| (i as f64 * 5.0, scale * (2.5 * (-(i as f64) / 40.0).exp() + 0.4 + 0.05 * ((i * 7919) % 13) as f64 / 13.0))).collect()
}

#[test]
fn train_and_eval_loss_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("images").join(image_file_name("train/loss"));
    let train = loss_curve(200, 1.0);
    let ys: Vec<f64> = train.iter().map(|p| p.1).collect();
    let smoothed: Vec<(f64, f64)> = train.iter().map(|p| p.0).zip(tensorboard_smoothing(&ys, 0.9)).collect();
    let plot = Plot {
        title: "train/loss".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        series: vec![
            Series::line("", train).with_color((0xFF, 0xE2, 0xD9)),
            Series::line("train (smoothed)", smoothed).with_color((0xFF, 0x70, 0x43)),
            Series::line("eval", loss_curve(10, 1.1).into_iter().map(|(x, y)| (x * 20.0, y)).collect()),
        ],
        ..Plot::default()
    };
    plot_lines(&path, &plot).unwrap();
    let img = check_png(&path, &plot);
    assert!(img.count([0xFF, 0x70, 0x43]) > 100, "smoothed curve drawn in its fixed colour");
    assert!(img.count(GREEN) > 50, "third series takes palette colour 2");
    // The title is drawn: dark pixels in the top band.
    assert!(img.dark_pixels_in_rows(0, 40) > 30, "title text missing");
    // No temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("train_loss.png")]);
}

#[test]
fn learning_rate_line_with_small_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train_learning_rate.png");
    // Linear warmup to 1e-4 then cosine decay: tick labels must not show float noise.
    let lr: Vec<(f64, f64)> = (0..300)
        .map(|s| {
            let s = s as f64;
            let y = if s < 30.0 { 1e-4 * s / 30.0 } else { 1e-4 * 0.5 * (1.0 + (std::f64::consts::PI * (s - 30.0) / 270.0).cos()) };
            (s, y)
        })
        .collect();
    let plot = Plot {
        title: "train/learning_rate".into(),
        x_label: "step".into(),
        y_label: "learning rate".into(),
        series: vec![Series::line("lr", lr)],
        ..Plot::default()
    };
    plot_lines(&path, &plot).unwrap();
    let img = check_png(&path, &plot);
    assert!(img.count(BLUE) > 200);
}

#[test]
fn sweep_scatter_log_x() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sweep_learning_rate.png");
    let points: Vec<(f64, f64)> =
        [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3].iter().map(|&lr: &f64| (lr, 1.0 + (lr.log10() + 4.0).powi(2) * 0.1)).collect();
    let plot = Plot {
        title: "eval_loss vs learning_rate".into(),
        x_label: "learning_rate".into(),
        y_label: "eval_loss".into(),
        // Line style is ignored by plot_scatter.
        series: vec![Series::line("trials", points).with_marked(vec![0, 6])],
        log_x: true,
        marked_label: "pruned".into(),
        ..Plot::default()
    };
    plot_scatter(&path, &plot).unwrap();
    let img = check_png(&path, &plot);
    assert!(img.count(BLUE) > 50);
}

#[test]
fn per_trial_curves_with_pruned_marks_log_y() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trials.png");
    let series = (0..6)
        .map(|t| {
            let len = if t % 2 == 0 { 10 } else { 4 };
            let pts: Vec<(f64, f64)> = (0..len).map(|i| (i as f64 * 50.0, (2.0 + t as f64 * 0.3) * (-(i as f64) / 6.0).exp())).collect();
            let s = Series::line(format!("trial {t}"), pts);
            if len == 4 {
                s.with_marked(vec![3])
            } else {
                s
            }
        })
        .collect();
    let plot = Plot {
        title: "intermediate eval_loss".into(),
        x_label: "step".into(),
        y_label: "eval_loss".into(),
        series,
        log_y: true,
        marked_label: "pruned".into(),
        size: (1000, 600),
        ..Plot::default()
    };
    plot_lines(&path, &plot).unwrap();
    check_png(&path, &plot);
}

#[test]
fn markers_style_and_both_log_axes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loglog.png");
    let pts: Vec<(f64, f64)> = (1..40).map(|i| (i as f64 * 1e3, 1.0 / (i as f64).sqrt())).collect();
    let plot = Plot { series: vec![Series::markers("points", pts)], log_x: true, log_y: true, ..Plot::default() };
    plot_lines(&path, &plot).unwrap();
    check_png(&path, &plot);
}

/// Inputs that must produce a valid PNG and never panic.
#[test]
fn edge_cases_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    let cases: Vec<(&str, Plot)> = vec![
        ("no_series", Plot { title: "nothing".into(), ..Plot::default() }),
        ("empty_series", Plot { series: vec![Series::line("empty", vec![]), Series::markers("", vec![])], ..Plot::default() }),
        ("single_point", Plot { series: vec![Series::line("one", vec![(3.0, 0.7)])], ..Plot::default() }),
        ("single_point_log", Plot { series: vec![Series::line("one", vec![(1e-4, 2.0)])], log_x: true, log_y: true, ..Plot::default() }),
        ("all_nan", Plot { series: vec![Series::line("nan", vec![(nan, nan), (1.0, nan), (nan, 2.0)])], ..Plot::default() }),
        (
            "mixed_non_finite",
            Plot {
                series: vec![Series::line("loss", vec![(0.0, 2.0), (1.0, nan), (2.0, inf), (3.0, -inf), (inf, 1.0), (4.0, 1.5)])
                    .with_marked(vec![1, 2, 5, 99])],
                marked_label: "marked".into(),
                ..Plot::default()
            },
        ),
        (
            "log_non_positive",
            Plot {
                series: vec![Series::line("lr", vec![(0.0, 0.0), (1.0, -1e-4), (2.0, 1e-4), (-3.0, 5e-5)])],
                log_x: true,
                log_y: true,
                ..Plot::default()
            },
        ),
        (
            "log_all_non_positive",
            Plot { series: vec![Series::line("zero", vec![(0.0, 0.0), (-1.0, -1.0)])], log_x: true, log_y: true, ..Plot::default() },
        ),
        ("constant", Plot { series: vec![Series::line("flat", vec![(0.0, 1.0), (1.0, 1.0), (2.0, 1.0)])], ..Plot::default() }),
        ("zeros", Plot { series: vec![Series::line("zeros", vec![(0.0, 0.0), (0.0, 0.0)])], ..Plot::default() }),
        (
            "tiny_span",
            Plot { series: vec![Series::line("eps", vec![(0.0, 1.0), (1.0, 1.0 + 1e-15), (2.0, 1.0 - 1e-15)])], ..Plot::default() },
        ),
        ("subnormal", Plot { series: vec![Series::line("tiny", vec![(0.0, 1e-320), (1.0, 5e-324)])], ..Plot::default() }),
        (
            "extreme",
            Plot {
                series: vec![Series::line(
                    "huge",
                    vec![(0.0, f64::MAX), (1.0, -f64::MAX), (2.0, 1e300), (3.0, 1e149), (4.0, -1e149), (f64::MIN_POSITIVE, 1.0)],
                )],
                ..Plot::default()
            },
        ),
        (
            "extreme_log",
            Plot {
                series: vec![Series::line("huge", vec![(1e-310, 1e-310), (1e299, 1e299), (f64::MAX, 1.0)])],
                log_x: true,
                log_y: true,
                ..Plot::default()
            },
        ),
        (
            "many_series",
            Plot {
                title: "30 trials".into(),
                series: (0..30)
                    .map(|t| Series::line(format!("trial {t} with a long name"), vec![(0.0, t as f64), (1.0, t as f64 + 1.0)]))
                    .collect(),
                marked_label: "pruned".into(),
                size: (400, 240),
                ..Plot::default()
            },
        ),
        ("many_points", Plot { series: vec![Series::line("100k", loss_curve(100_000, 1.0))], ..Plot::default() }),
        (
            "non_ascii_text",
            Plot {
                title: "损失 — μ·σ² ✓".into(),
                x_label: "schritt (ü)".into(),
                y_label: "".into(),
                series: vec![Series::line("λ = 0.1 🚀", loss_curve(20, 1.0))],
                ..Plot::default()
            },
        ),
        ("minimum_size", Plot { series: vec![Series::line("loss", loss_curve(20, 1.0))], size: (160, 160), ..Plot::default() }),
    ];
    for (name, plot) in &cases {
        for (kind, result) in [
            ("lines", plot_lines(dir.path().join(format!("{name}_lines.png")), plot)),
            ("scatter", plot_scatter(dir.path().join(format!("{name}_scatter.png")), plot)),
        ] {
            result.unwrap_or_else(|e| panic!("{name} ({kind}): {e}"));
            let img = decode(&dir.path().join(format!("{name}_{kind}.png")));
            assert_eq!((img.width, img.height), plot.size, "{name} ({kind})");
            // Even an empty plot has white background, grid and axes.
            assert!(img.distinct_colours() >= 3, "{name} ({kind}) looks blank");
        }
    }
}

/// A NaN in a line leaves a gap rather than a bridge between its neighbours.
#[test]
fn skipped_points_break_lines() {
    let dir = tempfile::tempdir().unwrap();
    let blue_pixels = |name: &str, points: Vec<(f64, f64)>| {
        let path = dir.path().join(name);
        let plot = Plot { series: vec![Series::line("", points)], ..Plot::default() };
        plot_lines(&path, &plot).unwrap();
        decode(&path).count(BLUE)
    };
    let whole = blue_pixels("whole.png", vec![(0.0, 0.0), (1.0, 0.0), (2.0, 0.0)]);
    let gapped = blue_pixels("gapped.png", vec![(0.0, 0.0), (1.0, f64::NAN), (2.0, 0.0)]);
    // The gapped series is two isolated points, drawn as markers.
    assert!(gapped > 0 && gapped * 4 < whole, "whole {whole}, gapped {gapped}");
}

#[test]
fn invalid_size_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for size in [(0, 100), (100, 0), (10, 10), (100_000, 500)] {
        let path = dir.path().join("bad.png");
        let err = plot_lines(&path, &Plot { size, ..Plot::default() }).unwrap_err();
        assert!(matches!(err, ReportError::InvalidPlot { .. }), "{err}");
        assert!(err.to_string().contains("bad.png"), "{err}");
        assert!(!path.exists());
    }
}

#[test]
fn overwrites_existing_file_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eval_loss.png");
    std::fs::write(&path, b"stale").unwrap();
    let plot = Plot { series: vec![Series::line("eval", loss_curve(10, 1.0))], ..Plot::default() };
    plot_lines(&path, &plot).unwrap();
    check_png(&path, &plot);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn unwritable_destination_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the parent folder should be.
    let blocker = dir.path().join("images");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let err = plot_lines(blocker.join("train_loss.png"), &Plot::default()).unwrap_err();
    assert!(matches!(err, ReportError::Io { .. }), "{err}");
}

#[test]
fn series_constructors() {
    let s = Series::markers("m", vec![(1.0, 2.0)]).with_marked(vec![0]).with_color((1, 2, 3));
    assert_eq!(s.style, SeriesStyle::Markers);
    assert_eq!(s.marked, vec![0]);
    assert_eq!(s.color, Some((1, 2, 3)));
    assert_eq!(Series::line("l", vec![]).style, SeriesStyle::Line);
}
