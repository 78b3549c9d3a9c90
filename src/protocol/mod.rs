//! The pool protocol: every state change of a segment and of a participant,
//! and every wait.
//!
//! This is the one place the protocol lives. It works on a [`Control`], a
//! set of references into a control block, and knows nothing of where that
//! block is (a shared mapping, or the heap under loom and in property tests),
//! of how a dead process is noticed (the caller passes a liveness oracle),
//! nor of payload bytes: callers move bytes, this module moves ownership.
//!
//! # Owners
//! Every process that uses a pool first *joins* it: it claims an entry of
//! the participant table ([`Control::join`]) and gets an [`Owner`] tag (the
//! entry and its incarnation). A segment is owned exactly when its
//! descriptor is not FREE, and its state word names the owner in the same
//! atomic word as its phase and epoch, so there is no instant at which a
//! segment is owned and nobody is accountable for it:
//!
//! ```text
//!                claim: bitmap CAS, then               commit: ring slot CAS
//!                descriptor CAS FREE -> WRITING(me)    EMPTY(t) -> FULL(t, s, e)
//!   FREE(e) ----------------------------------> WRITING(me, e+1) ------------.
//!    ^  ^                                          |      (still WRITING: the  |
//!    |  +-------- abort / drop / recover ----------+       slot says committed) |
//!    |           (not in the ring)                                             | take: descriptor CAS
//!    |                                  recover (in the ring)                  | WRITING|PUBLISHED
//!    |                       WRITING(dead) -----------------> PUBLISHED(-)     | -> HELD(me), then
//!    |                                                          |              | slot CAS, head on
//!    +--- release: last view dropped, or recover(dead) --- HELD(me) <----------+
//!         (to RECLAIMED(e): a free phase whose release is counted once)
//! ```
//!
//! The commit is the ring slot's compare-and-swap, made while the
//! descriptor stays WRITING: a consumer takes the descriptor first and
//! empties the slot second. So a dead writer's segment is committed exactly
//! when the ring still holds its `(segment, epoch)` or a consumer took it;
//! recovery reads the ring after the death and decides (see
//! [`Control::recover`]). A dead consumer's segments are HELD under its
//! name and come back.
//!
//! A release (or the recovery of a view) leaves the descriptor RECLAIMED
//! rather than FREE: free to claim, and "this epoch's release is counted
//! in `reclaimed`". The count lives in the descriptor too
//! ([`SegmentDesc::reclaims`]) and is made by a compare-and-swap keyed by
//! the epoch, so the releaser, the next claimer or a scrub can each make it
//! and it happens exactly once, even if the releaser is killed between the
//! two steps.
//!
//! # Futex words and flags
//! `space` (producers sleep for a free segment) and `data` (consumers sleep
//! for a published unit) are plain 32-bit sequences. A sleeper does not
//! count itself in them; it sets a flag in the word its waker must touch
//! anyway, and sleeps on the sequence value it read *before* the flag:
//!
//! | sleeper | flag | the waker's read-modify-write that sees it |
//! |---|---|---|
//! | producer | `WAITER` in every bitmap word ([`Bitmap::arm`]) | the `fetch_and` that frees a segment's bit |
//! | consumer | `WAITER` in the head slot ([`Ring::arm`]) | the publisher's slot CAS |
//!
//! A waker that finds the flag bumps the sequence and wakes every sleeper
//! on it (the flag is one bit for all of them); one that does not makes no
//! further access at all. Flag and wake-up are read-modify-writes of one
//! word, so that word's modification order decides every race without
//! `SeqCst` (which loom cannot model): either the waker's RMW comes first
//! and the sleeper's flag RMW sees the freed bit or filled slot, or the
//! flag comes first and the waker sees it; then the sleeper's sequence read
//! (sequenced before its flag) happens-before the bump, so its
//! `FUTEX_WAIT` returns at once or is woken.
//!
//! A sleeper that dies leaves its flag behind: the next waker makes one
//! spurious `FUTEX_WAKE` and clears it. Nothing counts dead sleepers. The
//! sequence is bumped only for flagged wake-ups, joins, recoveries and
//! shutdown. A wait's `before_sleep` bounds each sleep (the pool's
//! endpoints bound it to 10 s, `crate::watch`), so a sequence that wraps
//! around between a sleeper's read and its `FUTEX_WAIT` costs at most one
//! such sleep; a bare `Wait::timeout(None)` (the models) has no bound.
//!
//! # Invariants (see `docs/protocol.md` for the loom model of each)
//! 1. Exclusivity: a segment is claimed only by the descriptor CAS from
//!    FREE; a bitmap bit only says where to look.
//! 2. No lost wake-up: every wait goes through [`Control::wait_for`]; every
//!    waker reads the flag in the RMW that changes the condition.
//! 3. `reclaimed <= published`: a unit is reclaimed only after it was taken,
//!    and `published` counts taken tickets.
//! 4. Order: consumers take tickets in order from the ring ([`crate::ring`]).
//! 5. Timeouts and shutdown: waits end at their deadline, and the sticky
//!    shutdown flag is checked by every attempt after the flag is set.
//! 6. Generations: a unit claimed before a `reset` is never delivered after it.
//! 7. Accountability: each owned segment names its owner in its state word;
//!    recovery of a dead owner delivers its committed units and frees the
//!    rest, idempotently, and racing recoverers are safe.
//!
//! # Rooms
//! | file | what moves there |
//! |---|---|
//! | `control` | [`Control`]: the references into one block, its counters, `init` |
//! | `unit` | the names of claims and units: [`Lease`], [`UnitId`], [`Taken`] |
//! | `claim` | producers: begin, commit, abort |
//! | `take` | consumers: take, release, the reclaim count |
//! | `recover` | participants: join, leave, recover, scrub |
//! | `lifecycle` | shutdown, reset, wake-ups asked for from outside |
//! | `census` | one pass over the block for monitors: stats, participants, writers |
//! | `wait` | spin-then-park on a futex word, the retry budget, `notify` |
//!
//! Rooms import `control`, `unit` and `wait`, never each other; this file
//! only declares them.

mod census;
mod claim;
mod control;
mod lifecycle;
mod recover;
mod take;
mod unit;
mod wait;

pub use census::{ParticipantView, Stats};
pub use control::Control;
pub use recover::Recovered;
pub use unit::{Lease, Taken, UnitId};
#[cfg_attr(loom, allow(unused_imports))]
pub use wait::{BeforeSleep, Wait};
