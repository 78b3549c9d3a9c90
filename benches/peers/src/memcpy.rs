//! The two memcpy limits, in this process: the payload copied into one hot
//! buffer (the machine's copy speed), and into rotating destinations with
//! a pool's footprint (the copy-in anchor).

use crate::cell::{Cell, Sample};
use crate::proc::cpu_self;
use std::hint::black_box;
use std::time::Instant;

/// Runs `copy(n)` (n units) in bursts of `per_burst` units for the cell's
/// duration, after `warm` units; the fastest burst counts (the limit, not
/// the machine's noise).
fn fastest_burst(cell: &Cell, warm: u64, per_burst: u64, mut copy: impl FnMut(u64)) -> Sample {
    copy(warm);
    let (t0, c0) = (Instant::now(), cpu_self());
    let mut best = f64::MAX;
    let mut units = 0u64;
    while t0.elapsed() < cell.duration || units == 0 {
        let t = Instant::now();
        copy(per_burst);
        best = best.min(t.elapsed().as_secs_f64());
        units += per_burst;
    }
    let cpu = (cpu_self() - c0).as_secs_f64();
    Sample {
        units: per_burst,
        secs: best,
        prod_cpu: cpu * per_burst as f64 / units as f64,
        cons_cpu: 0.0,
        futex: (0, 0),
    }
}

/// Units per burst: about 2 MiB of payload, times 16.
fn per_burst(size: usize) -> u64 {
    ((2 << 20) / size).max(1) as u64 * 16
}

/// A source buffer as the producer of segpool-copy sees it: on the heap, 16
/// bytes past a page boundary, filled. (Source and destination at the same
/// page offset would hit the 4 KiB store-to-load aliasing penalty, which is
/// the allocator's doing, not the memory's.) Returns the buffer and the
/// payload's offset in it.
fn source(size: usize) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; size + 8192];
    let off = (4096 - buf.as_ptr() as usize % 4096) % 4096 + 16;
    for (i, b) in buf[off..off + size].iter_mut().enumerate() {
        *b = i as u8;
    }
    (buf, off)
}

/// The memcpy limit: copy the payload from one buffer into one hot,
/// page-aligned destination, one thread, in ~2 ms bursts.
pub fn memcpy(cell: &Cell) -> Sample {
    let (src_buf, so) = source(cell.size);
    let src = &src_buf[so..so + cell.size];
    let mut dst_buf = vec![0u8; cell.size + 8192];
    let d_o = (4096 - dst_buf.as_ptr() as usize % 4096) % 4096;
    let dst = &mut dst_buf[d_o..d_o + cell.size];
    let n = per_burst(cell.size);
    fastest_burst(cell, n.min(64), n, |k| {
        for _ in 0..k {
            dst.copy_from_slice(black_box(src));
            black_box(&mut *dst);
        }
    })
}

/// The copy-in limit: the same copy, but unit `i` goes to destination
/// `i % depth` of a `MAP_SHARED` memfd mapping with a pool's footprint
/// (`depth` page-aligned slots of the payload rounded up to a page), every
/// page faulted in beforehand. This is what a producer copying into a
/// pool's rotating segments could reach with a protocol that cost nothing:
/// once `depth * size` outgrows the caches, every unit is written to memory
/// no cache holds, which the hot-buffer `memcpy` never is.
pub fn memcpy_rotate(cell: &Cell) -> Sample {
    use rustix::mm::{MapFlags, ProtFlags};
    let (src_buf, so) = source(cell.size);
    let src = &src_buf[so..so + cell.size];
    let count = cell.depth;
    let stride = cell.size.next_multiple_of(rustix::param::page_size());
    let len = count * stride;
    let fd = rustix::fs::memfd_create("segpool-bench-memcpy", rustix::fs::MemfdFlags::CLOEXEC)
        .expect("memfd_create");
    rustix::fs::ftruncate(&fd, len as u64).expect("ftruncate");
    // SAFETY: a new shared mapping of a memfd only this process holds, at an
    // address the kernel picks: it aliases no Rust object. It is unmapped at
    // the end of this function, after the last use of `dst`.
    let base = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED | MapFlags::POPULATE,
            &fd,
            0,
        )
    }
    .expect("mmap");
    // SAFETY: `base` is a readable, writable mapping of `len` bytes (above),
    // zero-filled by the kernel, and nothing else refers to it while `dst`
    // lives.
    let dst = unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>(), len) };
    // Fault every page in for writing, as a pool's creator does when it
    // touches its segments (MAP_POPULATE alone may map them read-only).
    for page in dst.chunks_mut(rustix::param::page_size()) {
        page[0] = 1;
    }
    let mut i = 0usize;
    let n = per_burst(cell.size).next_multiple_of(count as u64);
    let s = fastest_burst(cell, count as u64, n, |k| {
        for _ in 0..k {
            let d = &mut dst[i * stride..i * stride + cell.size];
            d.copy_from_slice(black_box(src));
            black_box(&mut *d);
            i = (i + 1) % count;
        }
    });
    // SAFETY: `base`/`len` are the mapping made above, and `dst`, the only
    // view of it, is not used after this point.
    unsafe { rustix::mm::munmap(base, len) }.expect("munmap");
    s
}
