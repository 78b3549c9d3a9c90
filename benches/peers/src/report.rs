//! Results: medians over rounds, the Markdown table, the CSV, the PNG plot.

use crate::throughput::{ALL, Consume, Sample, Transport};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// Median over rounds of one (transport, size, consume) cell.
#[derive(Clone, Debug)]
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
    /// units/s relative to segpool (copy; loan for loan transports), as
    /// the median over rounds of the ratio within each round.
    pub ratio: f64,
    /// units/s relative to `memcpy-rotate`, the copy-in limit, likewise
    /// (NaN for the loan transports, which copy nothing).
    pub ratio_anchor: f64,
    pub rounds: usize,
    /// units/s in each round (NaN where the cell did not run).
    pub by_round: Vec<f64>,
}

/// Median over rounds of `a / b` within each round. Cells of one round run
/// seconds apart, rounds minutes apart: on a shared machine the load moves
/// every cell of a round together (2x between rounds here), so the ratio
/// within a round is far steadier than the ratio of two medians.
pub fn paired(a: &[f64], b: &[f64]) -> f64 {
    let v: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| x / y)
        .filter(|r| r.is_finite())
        .collect();
    if v.is_empty() { f64::NAN } else { median(v) }
}

/// Two-thread nanoseconds per unit, one sample per run.
#[derive(Clone, Debug, Default)]
pub struct TwoThreads {
    pub units: u64,
    pub v1: Vec<f64>,
    pub live: Vec<f64>,
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

/// One measured cell: (round, transport, size, consumer mode, numbers).
pub type Measured = (usize, Transport, usize, Consume, Sample);

pub fn rows(samples: &[Measured]) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    let mut keys: Vec<(Transport, usize, Consume)> = Vec::new();
    for &(_, t, s, c, _) in samples {
        if !keys.contains(&(t, s, c)) {
            keys.push((t, s, c));
        }
    }
    let rounds = samples.iter().map(|x| x.0 + 1).max().unwrap_or(0);
    for (t, size, c) in keys {
        let mine: Vec<&Sample> = samples
            .iter()
            .filter(|(_, a, b, d, _)| (*a, *b, *d) == (t, size, c))
            .map(|x| &x.4)
            .collect();
        let mut by_round = vec![f64::NAN; rounds];
        for (r, _, _, _, s) in samples
            .iter()
            .filter(|(_, a, b, d, _)| (*a, *b, *d) == (t, size, c))
        {
            by_round[*r] = s.units as f64 / s.secs;
        }
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
            ratio_anchor: f64::NAN,
            rounds: mine.len(),
            by_round,
        });
    }
    let snapshot = out.clone();
    for r in &mut out {
        let reference = if r.transport.is_loan() {
            Transport::SegpoolLoan
        } else {
            Transport::SegpoolCopy
        };
        let find = |t: Transport| {
            snapshot
                .iter()
                .find(|x| (x.transport, x.size, x.consume) == (t, r.size, r.consume))
        };
        if let Some(s) = find(reference) {
            r.ratio = paired(&r.by_round, &s.by_round);
        }
        if let Some(s) = find(Transport::MemcpyRotate).filter(|_| !r.transport.is_loan()) {
            r.ratio_anchor = paired(&r.by_round, &s.by_round);
        }
    }
    out
}

/// The row of one cell, if it ran.
fn find(rows: &[Row], t: Transport, size: usize, c: Consume) -> Option<&Row> {
    rows.iter()
        .find(|r| (r.transport, r.size, r.consume) == (t, size, c))
}

/// Median of a set of samples (NaN if empty).
pub fn median_of(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        median(v.to_vec())
    }
}

/// The protocol-v2 fast-path table: v1 against the live crate, same run.
pub fn before_after(rows: &[Row], two: &TwoThreads, futex: (&Sample, &Sample)) -> String {
    let mut md = String::from(
        "\n#### Fast path, before (segpool v1, frozen) and after (segpool, live) in this run\n\n\
         v1 and live: medians over rounds (pairs for two threads); live / v1: median of the \
         ratios within each round (pair).\n\n\
         | measure | v1 | live | live / v1 |\n|---|---:|---:|---:|\n",
    );
    let mut line = |what: &str, v1: f64, live: f64, ratio: f64, fmt: &dyn Fn(f64) -> String| {
        let _ = writeln!(
            md,
            "| {what} | {} | {} | {} |",
            fmt(v1),
            fmt(live),
            num(ratio)
        );
    };
    for (c, (t1, t)) in [Consume::Touch, Consume::Checksum]
        .into_iter()
        .flat_map(|c| {
            [
                (c, (Transport::SegpoolV1Copy, Transport::SegpoolCopy)),
                (c, (Transport::SegpoolV1Loan, Transport::SegpoolLoan)),
            ]
        })
    {
        let (Some(v1), Some(live)) = (find(rows, t1, 64, c), find(rows, t, 64, c)) else {
            continue;
        };
        line(
            &format!(
                "units/s, 64 B cross-process, {}, consumer `{}`",
                if t.is_loan() { "loan" } else { "copy-in" },
                c.name()
            ),
            v1.units_s,
            live.units_s,
            paired(&live.by_round, &v1.by_round),
            &si,
        );
    }
    line(
        "ns per 64 B unit, two threads in one process (median)",
        median_of(&two.v1),
        median_of(&two.live),
        paired(&two.live, &two.v1),
        &|x| format!("{x:.1}"),
    );
    let per_unit = |s: &Sample| (s.futex.0 + s.futex.1) as f64 / s.units as f64;
    line(
        "futex syscalls per 64 B unit, both sides, steady state",
        per_unit(futex.0),
        per_unit(futex.1),
        // No ratio: the goal is zero, and a handful of sleeps is noise.
        f64::NAN,
        &|x| format!("{x:.6}"),
    );
    md.push_str(
        "\nRMWs and instructions per unit on each side: `benches/callgrind.sh` \
         (exact counts, not timed), and the static count in `docs/benchmarks.md`.\n",
    );
    md
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
    let copy_in: Vec<Transport> = ALL.into_iter().filter(|t| !t.is_loan()).collect();
    let loans: Vec<Transport> = ALL.into_iter().filter(|t| t.is_loan()).collect();
    for c in [Consume::Touch, Consume::Checksum] {
        let _ = writeln!(
            md,
            "\n#### Copy-in, GB/s, consumer `{}` (x = ratio to memcpy-rotate, the copy-in limit; median of the ratios within each round)\n",
            c.name()
        );
        overview(&mut md, rows, sizes, c, &copy_in, |r| {
            format!("{} ({}x)", num(r.gb_s), num(r.ratio_anchor))
        });
    }
    for c in [Consume::Touch, Consume::Checksum] {
        let _ = writeln!(
            md,
            "\n#### Loan, units/s, consumer `{}` (x = ratio to segpool-loan, median of the ratios within each round; the producer writes 8 bytes per unit)\n",
            c.name()
        );
        overview(&mut md, rows, sizes, c, &loans, |r| {
            format!("{} ({}x)", si(r.units_s), num(r.ratio))
        });
    }
    let _ = writeln!(
        md,
        "\n#### Every cell (medians over rounds; x = median of the ratios within each round; CPU = getrusage user+sys of each process over the timed units)\n"
    );
    md.push_str("| consumer | size | transport | units/s | GB/s | x segpool | x memcpy-rotate | producer CPU s/GB | consumer CPU s/GB | consumer CPU µs/unit |\n");
    md.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for c in [Consume::Touch, Consume::Checksum] {
        for &s in sizes {
            for t in ALL {
                if let Some(r) = rows
                    .iter()
                    .find(|r| (r.transport, r.size, r.consume) == (t, s, c))
                {
                    let cons = |x: f64| {
                        if t.is_memcpy() { "-".into() } else { num(x) }
                    };
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        c.name(),
                        size_name(s),
                        t.name(),
                        si(r.units_s),
                        num(r.gb_s),
                        num(r.ratio),
                        num(r.ratio_anchor),
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

/// One overview table: a row per transport, a column per size.
fn overview(
    md: &mut String,
    rows: &[Row],
    sizes: &[usize],
    c: Consume,
    transports: &[Transport],
    cell: impl Fn(&Row) -> String,
) {
    let _ = write!(md, "| transport |");
    for s in sizes {
        let _ = write!(md, " {} |", size_name(*s));
    }
    let _ = write!(md, "\n|---|");
    for _ in sizes {
        let _ = write!(md, "---:|");
    }
    md.push('\n');
    for &t in transports {
        if !rows.iter().any(|r| r.transport == t) {
            continue; // not in this run (`--transports`)
        }
        let _ = write!(md, "| {} |", t.name());
        for &s in sizes {
            match find(rows, t, s, c) {
                Some(r) => {
                    let _ = write!(md, " {} |", cell(r));
                }
                None => md.push_str(" - |"),
            }
        }
        md.push('\n');
    }
}

pub fn csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "consume,size_bytes,transport,units_per_s,gb_per_s,ratio_to_segpool,ratio_to_memcpy_rotate,producer_cpu_s_per_gb,consumer_cpu_s_per_gb,consumer_cpu_us_per_unit,rounds,units_per_s_by_round\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{:.1},{:.4},{:.4},{:.4},{:.6},{:.6},{:.4},{},{}",
            r.consume.name(),
            r.size,
            r.transport.name(),
            r.units_s,
            r.gb_s,
            r.ratio,
            r.ratio_anchor,
            r.prod_s_gb,
            r.cons_s_gb,
            r.cons_us_unit,
            r.rounds,
            r.by_round
                .iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(";")
        );
    }
    s
}

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

/// Colour, line width and dash of a transport's line: segpool v1 is the
/// live crate's colour, dashed; the copy-in anchor is black, the hot-buffer
/// memcpy grey.
fn look(t: Transport) -> (RGBAColor, u32, bool) {
    let rgb = |r, g, b| RGBColor(r, g, b).to_rgba();
    match t {
        Transport::SegpoolCopy => (rgb(214, 39, 40), 3, false),
        Transport::SegpoolV1Copy => (rgb(214, 39, 40), 2, true),
        Transport::SegpoolLoan => (rgb(31, 119, 180), 3, false),
        Transport::SegpoolV1Loan => (rgb(31, 119, 180), 2, true),
        Transport::Pipe => (rgb(255, 127, 14), 3, false),
        Transport::Uds => (rgb(148, 103, 189), 3, false),
        Transport::IpcChannel => (rgb(23, 190, 207), 3, false),
        Transport::Iceoryx2 => (rgb(44, 160, 44), 3, false),
        Transport::MemcpyRotate => (rgb(0, 0, 0), 2, false),
        Transport::Memcpy => (rgb(150, 150, 150), 1, false),
    }
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
