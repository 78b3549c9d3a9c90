//! Throughput results: medians over rounds, paired ratios, the Markdown
//! tables, the CSV, and the number formats every table uses.

use crate::cell::{Consume, Sample};
use crate::stats::{median, paired};
use crate::transport::{ALL, Transport};
use std::fmt::Write as _;

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
pub fn find(rows: &[Row], t: Transport, size: usize, c: Consume) -> Option<&Row> {
    rows.iter()
        .find(|r| (r.transport, r.size, r.consume) == (t, size, c))
}

pub fn size_name(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

pub fn si(x: f64) -> String {
    match x {
        x if !x.is_finite() => "-".into(),
        x if x >= 1e6 => format!("{:.2} M", x / 1e6),
        x if x >= 1e3 => format!("{:.1} k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

pub fn num(x: f64) -> String {
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
