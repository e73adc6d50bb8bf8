//! SVG charts (plotters, SVG backend only: text is written as `<text>` elements, so no
//! font files or system libraries are needed).

use plotters::prelude::*;

use crate::report::Report;
use crate::sweep::SweepReport;
use crate::BenchError;

const WIDTH: u32 = 960;
const PANEL_HEIGHT: u32 = 400;
/// The spectrum's x axis ends at five nines (99.999 %).
const NINES_MAX: f64 = 5.0;

fn draw_error(e: impl std::fmt::Display) -> BenchError {
    BenchError::Io(format!("drawing the SVG: {e}"))
}

/// `percentile` on the "nines" axis: 90 → 1, 99 → 2, 99.9 → 3.
fn nines(percentile: f64) -> f64 {
    let rest = 1.0 - percentile / 100.0;
    if rest <= 0.0 {
        NINES_MAX
    } else {
        (-rest.log10()).min(NINES_MAX)
    }
}

/// The label of a point on the nines axis: 0 → "0%", 2 → "99%", 3 → "99.9%".
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.round() as usize).saturating_sub(2);
    format!("{p:.decimals$}%")
}

/// A number without trailing zeros: 2000, 1.5, 0.25.
fn number_label(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        let text = format!("{v:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Per-interval rates from a cumulative timeline: `(t, accepted/s, delivered/s)`.
fn rates(report: &Report) -> Vec<(f64, f64, f64)> {
    let mut out = Vec::with_capacity(report.timeline.len());
    let mut previous = (0.0, 0u64, 0u64);
    for s in &report.timeline {
        let dt = s.t_s - previous.0;
        if dt > 0.0 {
            out.push((
                s.t_s,
                (s.accepted.saturating_sub(previous.1)) as f64 / dt,
                (s.delivered.saturating_sub(previous.2)) as f64 / dt,
            ));
        }
        previous = (s.t_s, s.accepted, s.delivered);
    }
    out
}

/// A run's chart: the latency spectrum above, throughput over time below.
pub fn run_svg(report: &Report) -> Result<String, BenchError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 2 * PANEL_HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (top, bottom) = root.split_vertically(PANEL_HEIGHT);

        // Latency spectrum, log y (ms).
        let points: Vec<(f64, f64)> = report
            .latency_spectrum_us
            .iter()
            .map(|&(p, us)| (nines(p), (us.max(1)) as f64 / 1000.0))
            .collect();
        let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 2.0;
        let y_min = points.iter().map(|p| p.1).fold(y_max, f64::min).max(0.001) / 2.0;
        let mut chart = ChartBuilder::on(&top)
            .caption(
                format!(
                    "Latency spectrum ({} → arrival at the sink)",
                    if report.rate_offered.is_some() {
                        "scheduled send"
                    } else {
                        "publish"
                    }
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..NINES_MAX, (y_min..y_max).log_scale())
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency, ms")
            .x_labels(6)
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| number_label(*y))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(draw_error)?;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                BLUE.stroke_width(2),
            ))
            .map_err(draw_error)?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
            .map_err(draw_error)?;

        // Throughput over time.
        let rates = rates(report);
        let t_max = rates.last().map_or(1.0, |r| r.0).max(0.001);
        let r_max = rates.iter().map(|r| r.1.max(r.2)).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&bottom)
            .caption("Throughput over time", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..r_max)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("per second")
            .y_label_formatter(&|y| number_label(*y))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(draw_error)?;
        chart
            .draw_series(LineSeries::new(rates.iter().map(|r| (r.0, r.1)), &RED))
            .map_err(draw_error)?
            .label("accepted events/s")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .draw_series(LineSeries::new(rates.iter().map(|r| (r.0, r.2)), &BLUE))
            .map_err(draw_error)?
            .label("deliveries/s")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// A sweep's chart: p99 against the offered rate, one line per shard count, and the SLO.
pub fn sweep_svg(report: &SweepReport) -> Result<String, BenchError> {
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (WIDTH, PANEL_HEIGHT + 80)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let all: Vec<(f64, f64)> = report
            .series
            .iter()
            .flat_map(|s| {
                s.steps
                    .iter()
                    .map(|st| (st.rate, st.p99_us as f64 / 1000.0))
            })
            .collect();
        let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max) * 1.05;
        let y_max = all.iter().map(|p| p.1).fold(report.slo_p99_ms, f64::max) * 1.5;
        let y_min = all.iter().map(|p| p.1).fold(y_max, f64::min).max(0.01) / 2.0;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "p99 against offered rate (fan-out {}, SLO {} ms)",
                    report.fanout, report.slo_p99_ms
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("offered events/s")
            .y_desc("p99, ms")
            .x_label_formatter(&|x| number_label(*x))
            .y_label_formatter(&|y| number_label(*y))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(draw_error)?;
        let colours = [BLUE, RED, GREEN, MAGENTA];
        for (i, series) in report.series.iter().enumerate() {
            let colour = colours[i % colours.len()];
            let points: Vec<(f64, f64)> = series
                .steps
                .iter()
                .map(|s| (s.rate, (s.p99_us.max(10)) as f64 / 1000.0))
                .collect();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(draw_error)?
                .label(match series.shards {
                    Some(n) => format!("{n} shard(s)"),
                    None => "the server's shards".to_owned(),
                })
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(draw_error)?;
        }
        chart
            .draw_series(LineSeries::new(
                [(0.0, report.slo_p99_ms), (x_max, report.slo_p99_ms)],
                BLACK.stroke_width(1),
            ))
            .map_err(draw_error)?
            .label("SLO")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), NINES_MAX);
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(5.0), "99.999%");
        assert_eq!(number_label(2000.0), "2000");
        assert_eq!(number_label(1.5), "1.5");
        assert_eq!(number_label(3.0), "3");
    }
}
