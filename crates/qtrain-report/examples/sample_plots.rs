//! Writes one of each kind of report artefact, to look at by eye:
//!
//! ```text
//! cargo run -p qtrain-report --example sample_plots -- /tmp/qtrain-report-samples
//! ```
//!
//! `images/train_loss.png`, `images/eval_loss.png`, `images/train_learning_rate.png` (as
//! ms-swift names them), `sweep_learning_rate.png` (log x), `trials_eval_loss.png` (pruned
//! trials marked) and a TensorBoard event file under `runs/`.

use std::path::PathBuf;

use qtrain_report::{image_file_name, plot_lines, plot_scatter, tensorboard_smoothing, unix_time_now, EventWriter, Plot, Series};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "qtrain-report-samples".to_string()));
    let images = out.join("images");

    // A noisy decaying loss, logged every 5 steps, evaluated every 100.
    let noise = |i: usize| ((i * 7919 % 101) as f64 / 101.0 - 0.5) * 0.3;
    let train: Vec<(f64, f64)> = (0..200).map(|i| ((i * 5) as f64, 2.4 * (-(i as f64) / 35.0).exp() + 0.55 + noise(i))).collect();
    let eval: Vec<(f64, f64)> = (1..=10).map(|i| ((i * 100) as f64, 2.4 * (-(i as f64) * 20.0 / 35.0).exp() + 0.7)).collect();
    let lr: Vec<(f64, f64)> = (0..1000)
        .step_by(5)
        .map(|s| {
            let s = s as f64;
            let y = if s < 50.0 { 1e-4 * s / 50.0 } else { 1e-4 * 0.5 * (1.0 + (std::f64::consts::PI * (s - 50.0) / 950.0).cos()) };
            (s, y)
        })
        .collect();

    // ms-swift style: raw curve faint, smoothed (weight 0.9) strong.
    let ys: Vec<f64> = train.iter().map(|p| p.1).collect();
    let smoothed = train.iter().map(|p| p.0).zip(tensorboard_smoothing(&ys, 0.9)).collect();
    let loss_plot = Plot {
        title: "train/loss".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        series: vec![
            Series::line("train/loss", train.clone()).with_color((0xFF, 0xC4, 0xB0)),
            Series::line("smoothed (0.9)", smoothed).with_color((0xFF, 0x70, 0x43)),
        ],
        ..Plot::default()
    };
    plot_lines(images.join(image_file_name("train/loss")), &loss_plot)?;
    let eval_plot = Plot {
        title: "eval/loss".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        series: vec![Series::line("eval/loss", eval.clone())],
        ..Plot::default()
    };
    plot_lines(images.join(image_file_name("eval/loss")), &eval_plot)?;
    let lr_plot = Plot {
        title: "train/learning_rate".into(),
        x_label: "step".into(),
        y_label: "learning rate".into(),
        series: vec![Series::line("train/learning_rate", lr.clone())],
        ..Plot::default()
    };
    plot_lines(images.join(image_file_name("train/learning_rate")), &lr_plot)?;

    // A sweep: final eval loss against learning rate, two trials pruned.
    let lrs = [1e-5, 2e-5, 3e-5, 5e-5, 1e-4, 2e-4, 3e-4, 5e-4, 1e-3];
    let sweep = lrs.iter().map(|&x: &f64| (x, 0.9 + 0.12 * (x.log10() + 3.9).powi(2))).collect();
    let sweep_plot = Plot {
        title: "eval_loss vs learning_rate".into(),
        x_label: "learning_rate".into(),
        y_label: "eval_loss".into(),
        series: vec![Series::markers("trials", sweep).with_marked(vec![0, 8])],
        log_x: true,
        marked_label: "pruned".into(),
        ..Plot::default()
    };
    plot_scatter(out.join("sweep_learning_rate.png"), &sweep_plot)?;

    // Intermediate eval curves per trial; pruned trials stop early and get a cross.
    let trials = (0..6)
        .map(|t| {
            let pruned = t % 3 == 2;
            let n = if pruned { 3 } else { 8 };
            let pts: Vec<(f64, f64)> =
                (1..=n).map(|i| ((i * 100) as f64, 0.8 + 0.25 * t as f64 + 1.6 * (-(i as f64) / 2.5).exp())).collect();
            let s = Series::line(format!("trial {t}"), pts);
            if pruned {
                s.with_marked(vec![n - 1])
            } else {
                s
            }
        })
        .collect();
    let trials_plot = Plot {
        title: "intermediate eval_loss per trial".into(),
        x_label: "step".into(),
        y_label: "eval_loss".into(),
        series: trials,
        marked_label: "pruned".into(),
        ..Plot::default()
    };
    plot_lines(out.join("trials_eval_loss.png"), &trials_plot)?;

    let mut events = EventWriter::create(out.join("runs"))?;
    let now = unix_time_now();
    for &(step, v) in &train {
        events.add_scalar("train/loss", step as i64, v, now)?;
    }
    for &(step, v) in &lr {
        events.add_scalar("train/learning_rate", step as i64, v, now)?;
    }
    for &(step, v) in &eval {
        events.add_scalar("eval/loss", step as i64, v, now)?;
    }
    events.flush()?;
    println!("wrote {} and {}", out.display(), events.path().display());
    Ok(())
}
