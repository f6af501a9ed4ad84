//! `--plot FILE.svg`: horizontal bar charts of guest time per cycle and
//! exits per cycle, one bar per policy or peer model.

use plotters::prelude::*;

use super::report::{Report, Row, RowKind};

/// How a chart panel reads its value from a row.
type Metric = fn(&Row) -> f64;

const OURS: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const PEER: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// Whether `path` can be written, without changing it: an existing file is
/// opened for writing (not truncated); a new one is created and removed.
pub fn check_writable(path: &str) -> Result<(), String> {
    let p = std::path::Path::new(path);
    if p.is_dir() {
        return Err("is a directory".into());
    }
    if p.exists() {
        return std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .map(drop)
            .map_err(|e| format!("cannot write it: {e}"));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)
        .map_err(|e| format!("cannot create it: {e}"))?;
    std::fs::remove_file(p).map_err(|e| format!("cannot remove the probe file: {e}"))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_check_refuses_missing_directories_and_directories_and_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("msix-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let new = dir.join("new.svg");
        let new = new.to_str().unwrap();
        assert_eq!(check_writable(new), Ok(()));
        assert!(!std::path::Path::new(new).exists(), "the probe is removed");
        let existing = dir.join("old.svg");
        std::fs::write(&existing, "keep").unwrap();
        assert_eq!(check_writable(existing.to_str().unwrap()), Ok(()));
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep");
        assert_eq!(
            check_writable(dir.to_str().unwrap()),
            Err("is a directory".into())
        );
        assert!(check_writable("/nonexistent-msix-bench/x.svg")
            .unwrap_err()
            .starts_with("cannot create it"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
