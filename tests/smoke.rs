use segpool::SegmentPool;
use std::time::Duration;

#[test]
fn threads_round_trip_many_units_through_a_small_pool() {
    let pool = SegmentPool::builder(256, 3)
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (w, r) = (pool.open_writer(), pool.open_reader());
    std::thread::scope(|s| {
        for p in 0..2u64 {
            let w = w.clone();
            s.spawn(move || {
                for i in 0..20_000u64 {
                    let mut u = w.begin_unit().unwrap();
                    u.write_binary(&(p << 32 | i).to_le_bytes()).unwrap();
                    u.commit_unit().unwrap();
                }
            });
        }
        let mut next = [0u64; 2];
        for t in 0..40_000u64 {
            let u = r.recv().unwrap();
            assert_eq!(u.ticket(), t);
            let v = u64::from_le_bytes(u.read_binary(0, 8).unwrap().try_into().unwrap());
            let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
            assert_eq!(i, next[p]);
            next[p] += 1;
        }
    });
    assert_eq!(pool.published(), 40_000);
    assert_eq!(pool.reclaimed(), 40_000);
    assert_eq!(pool.stats().free, 3);
}
