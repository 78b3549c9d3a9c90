//! The `handle` target: `PoolHandle::from_str` on arbitrary strings.
//!
//! It must return a handle or `Error::BadHandle`, never panic; a handle that
//! parses prints as a string that parses back to an equal handle.

use segpool::{Error, PoolHandle};

/// Parses `data` (lossily decoded as UTF-8, and raw if it is UTF-8 already).
pub fn run(data: &[u8]) {
    check(&String::from_utf8_lossy(data));
}

/// The property, for one string.
pub fn check(s: &str) {
    match s.parse::<PoolHandle>() {
        Ok(h) => {
            let printed = h.to_string();
            let back: PoolHandle = printed.parse().unwrap_or_else(|e| {
                panic!("{s:?} parsed, but its display {printed:?} does not: {e}")
            });
            assert_eq!(back, h, "{s:?} -> {printed:?} round trip");
            assert_eq!(back.to_string(), printed);
        }
        Err(Error::BadHandle(why)) => assert!(!why.is_empty()),
        Err(e) => panic!("{s:?}: not a BadHandle error: {e:?}"),
    }
}
