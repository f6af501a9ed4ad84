//! `--plot FILE.svg`: horizontal bar charts of guest time per cycle and
//! exits per cycle, one bar per policy or peer model.

use plotters::prelude::*;

use super::report::{Report, Row, RowKind};

/// How a chart panel reads its value from a row.
type Metric = fn(&Row) -> f64;

const OURS: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const PEER: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// Writes the chart of `report` to `path` (SVG).
pub fn write_svg(report: &Report, path: &str) -> Result<(), String> {
    let rows = &report.rows;
    let height = 120 + 36 * rows.len() as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((1, 2));
    let metrics: [(&str, Metric); 2] = [
        ("guest time per Linux mask cycle (ns)", |r| {
            r.guest_ns_per_cycle
        }),
        ("exits to userspace per cycle", |r| r.exits_per_cycle),
    ];
    for (panel, (title, value)) in panels.iter().zip(metrics) {
        let max = rows.iter().map(value).fold(0.0_f64, f64::max).max(1.0) * 1.15;
        let n = rows.len() as f64;
        let names: Vec<String> = rows.iter().map(|r| r.policy.clone()).collect();
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(170)
            .build_cartesian_2d(0.0..max, 0.0..n)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .x_labels(6)
            .x_label_formatter(&|x| {
                if max >= 100.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x:.1}")
                }
            })
            .y_labels(rows.len() * 2 + 1)
            .y_label_formatter(&|y| {
                // Labels sit at bar centres (i + 0.5), top row first.
                let slot = (n - y - 0.5).round();
                if (n - y - 0.5 - slot).abs() < 0.01 && slot >= 0.0 {
                    names.get(slot as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                let top = n - i as f64 - 0.15;
                let bottom = n - i as f64 - 0.85;
                let colour = if r.kind == RowKind::Ours { OURS } else { PEER };
                Rectangle::new([(0.0, bottom), (value(r), top)], colour.filled())
            }))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                let v = value(r);
                let label = if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                };
                Text::new(
                    label,
                    (v + max * 0.01, n - i as f64 - 0.6),
                    ("sans-serif", 13),
                )
            }))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
