//! The loss-curve picture written at the end of a run: a self-contained SVG
//! with step on x, loss on y, the train loss as a line and the val loss as a
//! second line with markers. Hand-written so the trainer needs no plotting crate.

use crate::error::{Result, TrainError};
use std::fmt::Write as _;
use std::path::Path;

/// One logged step. `val_loss` is present on steps where validation ran.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossPoint {
    pub step: u64,
    pub train_loss: f32,
    pub val_loss: Option<f32>,
}

// Canvas and plot-area geometry, in SVG user units (pixels).
const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 56.0;
const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
const PLOT_H: f64 = HEIGHT - TOP - BOTTOM;

const TRAIN_COLOR: &str = "#1f77b4";
const VAL_COLOR: &str = "#d62728";
/// About this many intervals per axis; the nice-number rounding decides the rest.
const TARGET_TICKS: f64 = 6.0;

/// An SVG document plotting `points`. Non-finite losses are skipped (the line
/// joins its neighbours); with no finite loss at all the axes are drawn with a
/// "no data" note. Each series present becomes one `<polyline>` with one
/// vertex per finite point (class `train` / `val`); tick labels carry class
/// `xtick` / `ytick`.
pub fn loss_curve_svg(points: &[LossPoint], title: &str) -> String {
    // (step, loss) pairs of each series, finite losses only.
    let train: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.train_loss.is_finite())
        .map(|p| (p.step as f64, f64::from(p.train_loss)))
        .collect();
    let val: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| match p.val_loss {
            Some(v) if v.is_finite() => Some((p.step as f64, f64::from(v))),
            _ => None,
        })
        .collect();
    let all = || train.iter().chain(val.iter());

    let x_axis = Axis::fit(all().map(|&(x, _)| x), true);
    let y_axis = Axis::fit(all().map(|&(_, y)| y), false);
    let to_px = |(x, y): (f64, f64)| {
        (
            LEFT + x_axis.fraction(x) * PLOT_W,
            TOP + (1.0 - y_axis.fraction(y)) * PLOT_H,
        )
    };

    let mut svg = String::new();
    // Writing into a String cannot fail, so the fmt::Results below are ignored.
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="28" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );

    // Grid lines and tick labels.
    let _ = writeln!(svg, r##"<g stroke="#e0e0e0" stroke-width="1">"##);
    for tick in x_axis.ticks() {
        let x = LEFT + x_axis.fraction(tick) * PLOT_W;
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{TOP:.1}" x2="{x:.1}" y2="{:.1}"/>"#,
            TOP + PLOT_H
        );
    }
    for tick in y_axis.ticks() {
        let y = TOP + (1.0 - y_axis.fraction(tick)) * PLOT_H;
        let _ = writeln!(
            svg,
            r#"<line x1="{LEFT:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/>"#,
            LEFT + PLOT_W
        );
    }
    let _ = writeln!(svg, "</g>");
    for tick in x_axis.ticks() {
        let x = LEFT + x_axis.fraction(tick) * PLOT_W;
        let _ = writeln!(
            svg,
            r#"<text class="xtick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + PLOT_H + 18.0,
            x_axis.label(tick)
        );
    }
    for tick in y_axis.ticks() {
        let y = TOP + (1.0 - y_axis.fraction(tick)) * PLOT_H;
        let _ = writeln!(
            svg,
            r#"<text class="ytick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + 4.0,
            y_axis.label(tick)
        );
    }

    // Axes and their names.
    let _ = writeln!(
        svg,
        r#"<rect x="{LEFT:.1}" y="{TOP:.1}" width="{PLOT_W:.1}" height="{PLOT_H:.1}" fill="none" stroke="black" stroke-width="1"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="14">step</text>"#,
        LEFT + PLOT_W / 2.0,
        HEIGHT - 12.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{:.1}" text-anchor="middle" font-size="14" transform="rotate(-90 18 {:.1})">loss</text>"#,
        TOP + PLOT_H / 2.0,
        TOP + PLOT_H / 2.0
    );

    // The series: train as a plain line, val as a line with markers on top.
    if !train.is_empty() {
        let _ = writeln!(
            svg,
            r#"<polyline class="train" fill="none" stroke="{TRAIN_COLOR}" stroke-width="1.5" stroke-linejoin="round" points="{}"/>"#,
            polyline_points(&train, to_px)
        );
        if train.len() == 1 {
            // A one-vertex line draws nothing; mark the lone point instead.
            let (x, y) = to_px(train[0]);
            let _ = writeln!(
                svg,
                r#"<circle class="train-marker" cx="{x:.1}" cy="{y:.1}" r="3" fill="{TRAIN_COLOR}"/>"#
            );
        }
    }
    if !val.is_empty() {
        let _ = writeln!(
            svg,
            r#"<polyline class="val" fill="none" stroke="{VAL_COLOR}" stroke-width="2" stroke-linejoin="round" points="{}"/>"#,
            polyline_points(&val, to_px)
        );
        let _ = writeln!(svg, r#"<g class="val-markers" fill="{VAL_COLOR}">"#);
        for &point in &val {
            let (x, y) = to_px(point);
            let _ = writeln!(svg, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5"/>"#);
        }
        let _ = writeln!(svg, "</g>");
    }
    if train.is_empty() && val.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="14" fill="#808080">no data</text>"##,
            LEFT + PLOT_W / 2.0,
            TOP + PLOT_H / 2.0
        );
    }

    // Legend in the top-right corner of the plot area: a row per series
    // (color, line width, whether its points are marked, label).
    let rows = [
        (!train.is_empty(), TRAIN_COLOR, 1.5, false, "train loss"),
        (!val.is_empty(), VAL_COLOR, 2.0, true, "val loss"),
    ];
    let entries = rows.iter().filter(|row| row.0).count();
    if entries > 0 {
        let (lx, ly) = (LEFT + PLOT_W - 120.0, TOP + 10.0);
        let _ = writeln!(
            svg,
            r##"<rect x="{lx:.1}" y="{ly:.1}" width="110" height="{:.1}" fill="white" fill-opacity="0.85" stroke="#a0a0a0"/>"##,
            8.0 + 20.0 * entries as f64
        );
        let mut row_y = ly + 18.0;
        for (_, color, width, marked, label) in rows.into_iter().filter(|row| row.0) {
            let _ = writeln!(
                svg,
                r#"<line x1="{:.1}" y1="{row_y:.1}" x2="{:.1}" y2="{row_y:.1}" stroke="{color}" stroke-width="{width}"/>"#,
                lx + 8.0,
                lx + 32.0
            );
            if marked {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{row_y:.1}" r="3.5" fill="{color}"/>"#,
                    lx + 20.0
                );
            }
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}">{label}</text>"#,
                lx + 40.0,
                row_y + 4.0
            );
            row_y += 20.0;
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// Writes [`loss_curve_svg`] to `path` through a temporary file in the same
/// directory and a rename, so a reader never sees a half-written picture.
pub fn write_loss_svg(path: &Path, points: &[LossPoint], title: &str) -> Result<()> {
    let svg = loss_curve_svg(points, title);
    kinglet_tools::io::write_bytes_atomic(path, svg.as_bytes())
        .map_err(|e| TrainError::Io(format!("cannot write {e:#}")))
}

/// `x,y x,y ...` in pixels, one decimal.
fn polyline_points(series: &[(f64, f64)], to_px: impl Fn((f64, f64)) -> (f64, f64)) -> String {
    let mut out = String::with_capacity(series.len() * 12);
    for (i, &point) in series.iter().enumerate() {
        let (x, y) = to_px(point);
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{x:.1},{y:.1}");
    }
    out
}

/// One axis: a range `[lo, hi]` that starts and ends on ticks `step` apart.
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
    /// Integer axis (steps): ticks are whole numbers, labels use k/M/G suffixes.
    integer: bool,
}

impl Axis {
    /// The smallest nice range holding all `values` (or 0..1 when empty).
    fn fit(values: impl Iterator<Item = f64>, integer: bool) -> Axis {
        let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if lo > hi {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
            // One value (or all equal): give it room. A lone step count sits in
            // the middle of 0..2*step; a lone loss gets 10% either side.
            if integer {
                (lo, hi) = (0.0, (2.0 * hi).max(1.0));
            } else {
                let pad = (hi.abs() * 0.1).max(0.1);
                (lo, hi) = (lo - pad, hi + pad);
            }
        }
        if !integer {
            // Keep extreme losses off the frame: a 2% margin before rounding.
            let margin = 0.02 * (hi - lo);
            (lo, hi) = (lo - margin, hi + margin);
        }
        let mut step = nice_step((hi - lo) / TARGET_TICKS);
        if integer {
            step = step.max(1.0);
        }
        Axis {
            lo: (lo / step).floor() * step,
            hi: (hi / step).ceil() * step,
            step,
            integer,
        }
    }

    /// Position of `v` along the axis, 0 at `lo` and 1 at `hi`.
    fn fraction(&self, v: f64) -> f64 {
        (v - self.lo) / (self.hi - self.lo)
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        // Counted from integers times step, so ticks don't drift like repeated
        // additions would (0.1 + 0.2 + ...).
        let first = (self.lo / self.step).round();
        // Normally about TARGET_TICKS; the cap only guards degenerate ranges.
        let count = (((self.hi - self.lo) / self.step).round() as u64).min(100);
        (0..=count).map(move |i| (first + i as f64) * self.step)
    }

    fn label(&self, v: f64) -> String {
        if self.integer {
            return integer_label(v, self.step);
        }
        // Enough decimals to tell ticks apart: step 0.5 -> 1, 0.02 -> 2.
        let decimals = (-self.step.log10().floor()).max(0.0) as usize;
        let label = format!("{v:.decimals$}");
        // Avoid "-0.0" from values that are zero up to rounding.
        if label
            .trim_start_matches('-')
            .chars()
            .all(|c| c == '0' || c == '.')
        {
            label.trim_start_matches('-').to_owned()
        } else {
            label
        }
    }
}

/// 1, 2 or 5 times a power of ten, the smallest one at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// A step count for a tick label: `800`, `2500`, `10k`, `1.5M`, `18E`.
fn integer_label(v: f64, step: f64) -> String {
    const SUFFIXES: [(f64, &str); 6] = [
        (1e18, "E"),
        (1e15, "P"),
        (1e12, "T"),
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
    ];
    if v.abs() < 1e4 {
        return format!("{v:.0}");
    }
    for (scale, suffix) in SUFFIXES {
        if v.abs() >= scale {
            let scaled_step = step / scale;
            let decimals = if scaled_step >= 1.0 {
                0
            } else {
                (-scaled_step.log10().floor()) as usize
            };
            return format!("{:.decimals$}{suffix}", v / scale);
        }
    }
    format!("{v:.0}")
}

/// Text safe inside an SVG element or attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even when escaped.
            c if c.is_control() && c != '\t' && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_are_one_two_five() {
        assert_eq!(nice_step(0.07), 0.1);
        assert_eq!(nice_step(0.15), 0.2);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(170.0), 200.0);
        assert_eq!(nice_step(600.0), 1000.0);
    }

    #[test]
    fn step_labels_use_suffixes_past_ten_thousand() {
        assert_eq!(integer_label(800.0, 200.0), "800");
        assert_eq!(integer_label(2500.0, 500.0), "2500");
        assert_eq!(integer_label(10_000.0, 2000.0), "10k");
        assert_eq!(integer_label(1_500_000.0, 500_000.0), "1.5M");
        assert_eq!(integer_label(18e18, 2e18), "18E");
    }

    #[test]
    fn axis_covers_data_with_round_ends() {
        let axis = Axis::fit([1.93, 4.21].into_iter(), false);
        assert_eq!((axis.lo, axis.hi, axis.step), (1.5, 4.5, 0.5));
        let labels: Vec<String> = axis.ticks().map(|t| axis.label(t)).collect();
        assert_eq!(labels, ["1.5", "2.0", "2.5", "3.0", "3.5", "4.0", "4.5"]);
    }
}
