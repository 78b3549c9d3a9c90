//! Results: medians over rounds, the Markdown table, the CSV, the PNG plot.

use crate::throughput::{ALL, Consume, Sample, Transport};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// Median over rounds of one (transport, size, consume) cell.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub transport: Transport,
    pub size: usize,
    pub consume: Consume,
    pub units_s: f64,
    pub gb_s: f64,
    /// CPU seconds per GB moved, producer side.
    pub prod_s_gb: f64,
    /// CPU seconds per GB moved, consumer side.
    pub cons_s_gb: f64,
    /// Consumer CPU µs per unit.
    pub cons_us_unit: f64,
    /// units/s relative to segpool (copy; loan for loan transports).
    pub ratio: f64,
    pub rounds: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn rows(samples: &[(Transport, usize, Consume, Sample)]) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    let mut keys: Vec<(Transport, usize, Consume)> = Vec::new();
    for &(t, s, c, _) in samples {
        if !keys.contains(&(t, s, c)) {
            keys.push((t, s, c));
        }
    }
    for (t, size, c) in keys {
        let mine: Vec<&Sample> = samples
            .iter()
            .filter(|(a, b, d, _)| (*a, *b, *d) == (t, size, c))
            .map(|x| &x.3)
            .collect();
        let gb = |s: &Sample| s.units as f64 * size as f64 / 1e9;
        let units_s = median(mine.iter().map(|s| s.units as f64 / s.secs).collect());
        out.push(Row {
            transport: t,
            size,
            consume: c,
            units_s,
            gb_s: units_s * size as f64 / 1e9,
            prod_s_gb: median(mine.iter().map(|s| s.prod_cpu / gb(s)).collect()),
            cons_s_gb: median(mine.iter().map(|s| s.cons_cpu / gb(s)).collect()),
            cons_us_unit: median(
                mine.iter()
                    .map(|s| s.cons_cpu * 1e6 / s.units as f64)
                    .collect(),
            ),
            ratio: f64::NAN,
            rounds: mine.len(),
        });
    }
    let snapshot = out.clone();
    for r in &mut out {
        let reference = if r.transport.is_loan() {
            Transport::SegpoolLoan
        } else {
            Transport::SegpoolCopy
        };
        if let Some(s) = snapshot
            .iter()
            .find(|x| (x.transport, x.size, x.consume) == (reference, r.size, r.consume))
        {
            r.ratio = r.units_s / s.units_s;
        }
    }
    out
}

pub fn size_name(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn si(x: f64) -> String {
    match x {
        x if !x.is_finite() => "-".into(),
        x if x >= 1e6 => format!("{:.2} M", x / 1e6),
        x if x >= 1e3 => format!("{:.1} k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

fn num(x: f64) -> String {
    match x {
        x if !x.is_finite() => "-".into(),
        0.0 => "0".into(),
        x if x >= 100.0 => format!("{x:.0}"),
        x if x >= 1.0 => format!("{x:.2}"),
        x => format!("{x:.3}"),
    }
}

/// The throughput tables: a GB/s overview per consumer mode, then every
/// column for every cell.
pub fn markdown(rows: &[Row], sizes: &[usize]) -> String {
    let mut md = String::new();
    for c in [Consume::Touch, Consume::Checksum] {
        let _ = writeln!(
            md,
            "\n#### GB/s, consumer `{}` (x = ratio to segpool-copy; to segpool-loan for iceoryx2-loan)\n",
            c.name()
        );
        let _ = write!(md, "| transport |");
        for s in sizes {
            let _ = write!(md, " {} |", size_name(*s));
        }
        let _ = write!(md, "\n|---|");
        for _ in sizes {
            let _ = write!(md, "---:|");
        }
        md.push('\n');
        for t in ALL {
            let _ = write!(md, "| {} |", t.name());
            for &s in sizes {
                match rows
                    .iter()
                    .find(|r| (r.transport, r.size, r.consume) == (t, s, c))
                {
                    Some(r) => {
                        let _ = write!(md, " {} ({}x) |", num(r.gb_s), num(r.ratio));
                    }
                    None => md.push_str(" - |"),
                }
            }
            md.push('\n');
        }
    }
    let _ = writeln!(
        md,
        "\n#### Every cell (medians over rounds; CPU = getrusage user+sys of each process over the timed units)\n"
    );
    md.push_str("| consumer | size | transport | units/s | GB/s | x segpool | producer CPU s/GB | consumer CPU s/GB | consumer CPU µs/unit |\n");
    md.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for c in [Consume::Touch, Consume::Checksum] {
        for &s in sizes {
            for t in ALL {
                if let Some(r) = rows
                    .iter()
                    .find(|r| (r.transport, r.size, r.consume) == (t, s, c))
                {
                    let cons = |x: f64| {
                        if t == Transport::Memcpy {
                            "-".into()
                        } else {
                            num(x)
                        }
                    };
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        c.name(),
                        size_name(s),
                        t.name(),
                        si(r.units_s),
                        num(r.gb_s),
                        num(r.ratio),
                        num(r.prod_s_gb),
                        cons(r.cons_s_gb),
                        cons(r.cons_us_unit),
                    );
                }
            }
        }
    }
    md
}

pub fn csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "consume,size_bytes,transport,units_per_s,gb_per_s,ratio_to_segpool,producer_cpu_s_per_gb,consumer_cpu_s_per_gb,consumer_cpu_us_per_unit,rounds\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{:.1},{:.4},{:.4},{:.6},{:.6},{:.4},{}",
            r.consume.name(),
            r.size,
            r.transport.name(),
            r.units_s,
            r.gb_s,
            r.ratio,
            r.prod_s_gb,
            r.cons_s_gb,
            r.cons_us_unit,
            r.rounds
        );
    }
    s
}

/// Throughput (GB/s) against payload size, log-log, one line per transport,
/// one panel per consumer mode. Text uses the DejaVu Sans font compiled into
/// the binary, so no system font is needed.
pub fn plot(rows: &[Row], sizes: &[usize], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "bad font")?;
    let root = BitMapBackend::new(path, (1600, 650)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let finite = rows
        .iter()
        .map(|r| r.gb_s)
        .filter(|x| x.is_finite() && *x > 0.0);
    let lo = finite.clone().fold(f64::MAX, f64::min).max(1e-6) / 2.0;
    let hi = finite.fold(0.0, f64::max) * 2.0;
    // The x axis is log2(size) on a linear scale: a log axis whose ticks
    // fall on the measured sizes.
    let lg = |s: usize| (s as f64).log2();
    let (x0, x1) = (lg(sizes[0]) - 0.5, lg(*sizes.last().unwrap()) + 0.5);
    for (panel, c) in panels.iter().zip([Consume::Touch, Consume::Checksum]) {
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("throughput, consumer {}", c.name()),
                ("sans-serif", 26),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("payload size (log scale)")
            .y_desc("GB/s")
            .x_labels(40)
            .x_label_formatter(&|x| {
                sizes
                    .iter()
                    .find(|&&s| (lg(s) - x).abs() < 0.01)
                    .map(|&s| size_name(s))
                    .unwrap_or_default()
            })
            .y_label_formatter(&|y| {
                if *y >= 1.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y}")
                }
            })
            .label_style(("sans-serif", 15))
            .draw()?;
        for (i, t) in ALL.into_iter().enumerate() {
            let pts: Vec<(f64, f64)> = sizes
                .iter()
                .filter_map(|&s| {
                    rows.iter()
                        .find(|r| (r.transport, r.size, r.consume) == (t, s, c))
                        .filter(|r| r.gb_s > 0.0 && r.gb_s.is_finite())
                        .map(|r| (lg(s), r.gb_s))
                })
                .collect();
            let color = Palette99::pick(i).to_rgba();
            let style =
                ShapeStyle::from(color).stroke_width(if t == Transport::Memcpy { 1 } else { 3 });
            chart
                .draw_series(LineSeries::new(pts.clone(), style))?
                .label(t.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
