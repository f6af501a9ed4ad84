//! `--plot FILE.svg`: guest time per Linux mask cycle (median over rounds
//! with its 95% interval as an error bar) and exits per cycle, one bar per
//! row, coloured ours / peer model / floor, with the run's parameters.

use plotters::prelude::*;

use super::report::{Report, RowKind, RowReport};

const OURS: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const PEER: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const FLOOR: RGBColor = RGBColor(0x7f, 0x7f, 0x7f);

fn colour(kind: RowKind) -> RGBColor {
    match kind {
        RowKind::Ours => OURS,
        RowKind::Peer => PEER,
        RowKind::Floor => FLOOR,
    }
}

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

/// One panel: a value per row, and optionally its interval.
struct Panel {
    title: &'static str,
    value: fn(&RowReport) -> f64,
    interval: Option<fn(&RowReport) -> [f64; 2]>,
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    rows: &[RowReport],
    panel: &Panel,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let top = |r: &RowReport| {
        panel
            .interval
            .map_or((panel.value)(r), |i| i(r)[1].max((panel.value)(r)))
    };
    let max = rows
        .iter()
        .map(top)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.18;
    let n = rows.len() as f64;
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 17))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(170)
        .build_cartesian_2d(0.0..max, 0.0..n)
        .map_err(e)?;
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
        .map_err(e)?;
    let centre = |i: usize| n - i as f64 - 0.5;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let v = (panel.value)(r);
            let v = if v.is_finite() { v } else { 0.0 };
            Rectangle::new(
                [(0.0, centre(i) - 0.35), (v, centre(i) + 0.35)],
                colour(r.kind).filled(),
            )
        }))
        .map_err(e)?;
    if let Some(interval) = panel.interval {
        for (i, r) in rows.iter().enumerate() {
            let [lo, hi] = interval(r);
            if !(lo.is_finite() && hi.is_finite()) {
                continue;
            }
            let y = centre(i);
            let style = BLACK.stroke_width(2);
            chart
                .draw_series([
                    PathElement::new(vec![(lo, y), (hi, y)], style),
                    PathElement::new(vec![(lo, y - 0.2), (lo, y + 0.2)], style),
                    PathElement::new(vec![(hi, y - 0.2), (hi, y + 0.2)], style),
                ])
                .map_err(e)?;
        }
    }
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let v = (panel.value)(r);
            let label = if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            };
            Text::new(
                label,
                (top(r) + max * 0.01, centre(i) - 0.1),
                ("sans-serif", 12),
            )
        }))
        .map_err(e)?;
    Ok(())
}

/// Writes the chart of `report` to `path` (SVG).
pub fn write_svg(report: &Report, path: &str) -> Result<(), String> {
    let rows = &report.rows;
    let height = 150 + 32 * rows.len() as u32;
    let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<std::io::Error>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (header, body) = root.split_vertically(84);
    header
        .draw(&Text::new(
            "msix-bench: cost of a Linux MSI-X mask cycle (mask, flush read, unmask); lower is better",
            (12, 8),
            ("sans-serif", 19),
        ))
        .map_err(e)?;
    header
        .draw(&Text::new(
            report.parameters(),
            (12, 34),
            ("sans-serif", 13),
        ))
        .map_err(e)?;
    let legend = [
        (OURS, "ours (msix-accel policies)"),
        (PEER, "models of peer VMMs"),
        (FLOOR, "physical floors of this host's KVM"),
    ];
    let mut x = 12;
    for (c, label) in legend {
        header
            .draw(&Rectangle::new([(x, 58), (x + 16, 72)], c.filled()))
            .map_err(e)?;
        header
            .draw(&Text::new(label, (x + 22, 58), ("sans-serif", 13)))
            .map_err(e)?;
        x += 22 + 9 * label.len() as i32;
    }
    header
        .draw(&Text::new(
            "error bars: 95% interval of the median over rounds",
            (x + 10, 58),
            ("sans-serif", 13),
        ))
        .map_err(e)?;
    let (left, right) = body.split_horizontally(760);
    draw_panel(
        &left,
        rows,
        &Panel {
            title: "guest time per cycle, ns (median, 95% interval)",
            value: |r| r.guest_ns_median,
            interval: Some(|r| r.guest_ns_ci95),
        },
    )?;
    draw_panel(
        &right,
        rows,
        &Panel {
            title: "exits to userspace per cycle",
            value: |r| r.exits_per_cycle,
            interval: None,
        },
    )?;
    root.present().map_err(e)
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
