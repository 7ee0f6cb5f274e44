//! The latency-distribution chart of the `request-path` scenario (SVG, with plotters): one
//! panel per in-flight level, one line per target, latency (log scale) against the
//! percentile; the percentiles (p50 ... p99.99, about half a "nine" apart) are spaced
//! evenly, which makes the x axis close to logarithmic in the tail.

use std::path::Path;

use plotters::prelude::*;

/// Line colours by series, in the order the targets are measured: the mesh's stands out.
const COLORS: [RGBColor; 5] = [
    RGBColor(150, 150, 150), // tonic h2c
    RGBColor(31, 119, 180),  // tonic mTLS
    RGBColor(214, 39, 40),   // mesh
    RGBColor(255, 127, 14),  // two haproxy hops
    RGBColor(44, 160, 44),
];

/// One target's latency distribution at one in-flight level.
pub(crate) struct Series {
    pub(crate) label: String,
    pub(crate) in_flight: usize,
    /// `(quantile, µs)`, quantiles in `[0.5, 1)`.
    pub(crate) points: Vec<(f64, f64)>,
}

/// Writes the chart to `path`, one panel for each of `in_flight`.
pub(crate) fn write(path: &Path, series: &[Series], in_flight: &[usize]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let panels = root.split_evenly((1, in_flight.len().max(1)));
    let labels: Vec<&str> = {
        let mut l: Vec<&str> = series.iter().map(|s| s.label.as_str()).collect();
        l.dedup();
        l
    };
    for (panel, &level) in panels.iter().zip(in_flight) {
        let mine: Vec<&Series> = series.iter().filter(|s| s.in_flight == level).collect();
        let values = mine.iter().flat_map(|s| s.points.iter().map(|p| p.1));
        let (lo, hi) = values
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if hi <= 0.0 {
            continue;
        }
        // Every series has the same quantiles: each gets an evenly spaced slot.
        let mut quantiles: Vec<f64> = mine
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .collect();
        quantiles.sort_by(f64::total_cmp);
        quantiles.dedup();
        let slot = |q: f64| quantiles.iter().position(|&x| x == q).unwrap_or(0) as f64;
        let last = quantiles.len().saturating_sub(1) as f64;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("request path, {level} in flight"),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.2..last + 0.2, (lo * 0.8..hi * 1.25).log_scale())
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (µs)")
            .x_labels(quantiles.len() * 2)
            .x_label_formatter(&|x| {
                let i = x.round();
                match quantiles.get(i as usize) {
                    Some(q) if (x - i).abs() < 0.01 && i >= 0.0 => format!("p{}", trim(q * 100.0)),
                    _ => String::new(),
                }
            })
            // Enough labels that a panel spanning less than a decade still has a few.
            .y_labels(30)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(draw_error)?;
        for s in mine {
            let index = labels.iter().position(|l| *l == s.label).unwrap_or(0);
            let color = COLORS[index % COLORS.len()].to_rgba();
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().map(|&(q, us)| (slot(q), us)),
                    color.stroke_width(2),
                ))
                .map_err(draw_error)?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(draw_error)?;
    }
    root.present().map_err(draw_error)?;
    Ok(())
}

/// A percentile without trailing zeros: 99.9, 50.
fn trim(p: f64) -> String {
    let s = format!("{p:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn draw_error<E: std::fmt::Display>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {error}")
}
