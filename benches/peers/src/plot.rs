//! The PNG plot of a throughput run.

use crate::cell::Consume;
use crate::report::{Row, size_name};
use crate::transport::{ALL, Pin, Transport};
use plotters::prelude::*;
use std::path::Path;

/// Throughput against payload size, log-log, one line per transport: copy-in
/// transports in GB/s (top), loan transports in units/s (bottom: their
/// producers write 8 bytes, so bytes "made available" would say nothing),
/// one column per consumer mode. Text uses the DejaVu Sans font compiled into
/// the binary, so no system font is needed.
pub fn plot(rows: &[Row], sizes: &[usize], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "bad font")?;
    let root = BitMapBackend::new(path, (1600, 1250)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 2));
    let copy_in: Vec<Transport> = ALL.into_iter().filter(|t| !t.is_loan()).collect();
    let loans: Vec<Transport> = ALL.into_iter().filter(|t| t.is_loan()).collect();
    let gb: &dyn Fn(&Row) -> f64 = &|r| r.gb_s;
    let units: &dyn Fn(&Row) -> f64 = &|r| r.units_s;
    let specs = [
        (Consume::Touch, "copy-in", "GB/s", &copy_in, gb),
        (Consume::Checksum, "copy-in", "GB/s", &copy_in, gb),
        (Consume::Touch, "loan", "units/s", &loans, units),
        (Consume::Checksum, "loan", "units/s", &loans, units),
    ];
    for (panel, (c, kind, unit, transports, value)) in panels.iter().zip(specs) {
        let title = format!("{kind}, consumer {}", c.name());
        draw_panel(panel, rows, sizes, c, &title, unit, transports, value)?;
    }
    root.present()?;
    Ok(())
}

/// One panel of [`plot`]: `value` of each transport's rows against size.
#[allow(clippy::too_many_arguments)]
fn draw_panel(
    panel: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    rows: &[Row],
    sizes: &[usize],
    c: Consume,
    title: &str,
    unit: &str,
    transports: &[Transport],
    value: &dyn Fn(&Row) -> f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let mine: Vec<&Row> = rows
        .iter()
        .filter(|r| r.consume == c && transports.contains(&r.transport))
        .filter(|r| value(r) > 0.0 && value(r).is_finite())
        .collect();
    let lo = mine.iter().map(|r| value(r)).fold(f64::MAX, f64::min) / 2.0;
    let hi = mine.iter().map(|r| value(r)).fold(0.0, f64::max) * 2.0;
    let (lo, hi) = if lo < hi { (lo, hi) } else { (1e-6, 1.0) };
    // The x axis is log2(size) on a linear scale: a log axis whose ticks
    // fall on the measured sizes.
    let lg = |s: usize| (s as f64).log2();
    let (x0, x1) = (lg(sizes[0]) - 0.5, lg(*sizes.last().unwrap()) + 0.5);
    let mut chart = ChartBuilder::on(panel)
        .caption(title, ("sans-serif", 26))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("payload size (log scale)")
        .y_desc(unit)
        .x_labels(40)
        .x_label_formatter(&|x| {
            sizes
                .iter()
                .find(|&&s| (lg(s) - x).abs() < 0.01)
                .map(|&s| size_name(s))
                .unwrap_or_default()
        })
        .y_label_formatter(&|y| si_axis(*y))
        .label_style(("sans-serif", 15))
        .draw()?;
    for &t in transports {
        if !mine.iter().any(|r| r.transport == t) {
            continue; // not in this run (`--transports`)
        }
        let pts: Vec<(f64, f64)> = mine
            .iter()
            .filter(|r| r.transport == t)
            .map(|r| (lg(r.size), value(r)))
            .collect();
        let (color, width, dashed) = look(t);
        let style = ShapeStyle::from(color).stroke_width(width);
        if dashed {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 10, 6, style))?
        } else {
            chart.draw_series(LineSeries::new(pts.clone(), style))?
        }
        .label(t.name())
        .legend(move |(x, y)| {
            // One 20-pixel dash is a solid legend line.
            let (dash, gap) = if dashed { (5, 4) } else { (20, 20) };
            plotters::element::DashedPathElement::new(vec![(x, y), (x + 20, y)], dash, gap, style)
        });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Colour, line width and dash of a transport's line: a pinned old version
/// is the live crate's colour, dashed; the copy-in anchor is black, the hot-buffer
/// memcpy grey.
fn look(t: Transport) -> (RGBAColor, u32, bool) {
    let rgb = |r, g, b| RGBColor(r, g, b).to_rgba();
    match t {
        Transport::SegpoolCopy => (rgb(214, 39, 40), 3, false),
        Transport::PinnedCopy(p) => (shade((214, 39, 40), p), 2, true),
        Transport::SegpoolLoan => (rgb(31, 119, 180), 3, false),
        Transport::PinnedLoan(p) => (shade((31, 119, 180), p), 2, true),
        Transport::Pipe => (rgb(255, 127, 14), 3, false),
        Transport::Uds => (rgb(148, 103, 189), 3, false),
        Transport::IpcChannel => (rgb(23, 190, 207), 3, false),
        Transport::Iceoryx2 => (rgb(44, 160, 44), 3, false),
        Transport::MemcpyRotate => (rgb(0, 0, 0), 2, false),
        Transport::Memcpy => (rgb(150, 150, 150), 1, false),
    }
}

/// A pinned version's shade of the live crate's colour: v1 lighter, v3
/// darker.
fn shade((r, g, b): (u8, u8, u8), p: Pin) -> RGBAColor {
    let f = |c: u8| match p {
        Pin::V1 => c + (255 - c) / 2,
        Pin::V2 => c,
        Pin::V3 => c / 2,
    };
    RGBColor(f(r), f(g), f(b)).to_rgba()
}

/// An axis label: 0.5, 3, 40, 2 k, 5 M.
fn si_axis(y: f64) -> String {
    match y {
        y if y >= 1e6 => format!("{:.0} M", y / 1e6),
        y if y >= 1e3 => format!("{:.0} k", y / 1e3),
        y if y >= 1.0 => format!("{y:.0}"),
        y => format!("{y}"),
    }
}
