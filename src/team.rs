//! A team of threads for one forward pass: the calling thread and the pool's other threads split
//! each matrix product by rows, and between products the helpers spin rather than sleep.
//!
//! Why not a rayon `par_iter` per product: a decode step is 211 products of a millisecond or less,
//! and each handoff to a sleeping pool thread costs a wake — tens of microseconds for a browser's
//! Web Worker, more than most of these products take (measured: two threads then decoded only
//! 3–14% faster than one). Here the pool's threads are woken once per pass and the products are
//! handed over through an atomic word per thread, so a second core roughly doubles the memory
//! bandwidth the products get, which is what bounds decoding.
//!
//! The split never changes a result: parts are whole rows, and a row's sum is the same whichever
//! thread computes it.

/// A product's work: `job(part)` for every part in 0..parts, in any order, on any thread.
pub type Job<'a> = &'a (dyn Fn(usize) + Sync);

/// A buffer the parts of one job write together, each part only where no other part reads or
/// writes (its own rows). The borrow it was made from lasts as long as it does.
pub struct Disjoint<'a, T> {
    start: *mut T,
    len: usize,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: parts use disjoint elements (the contract of `part`), and a job returns only after
// every part has finished.
unsafe impl<T: Send> Sync for Disjoint<'_, T> {}

impl<'a, T> Disjoint<'a, T> {
    pub fn new(buf: &'a mut [T]) -> Self {
        Disjoint { start: buf.as_mut_ptr(), len: buf.len(), _borrow: std::marker::PhantomData }
    }

    /// SAFETY: while the returned slice lives, no other part touches `at..at + len`.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn part(&self, at: usize, len: usize) -> &mut [T] {
        assert!(at + len <= self.len, "a part past the end of its buffer");
        unsafe { std::slice::from_raw_parts_mut(self.start.add(at), len) }
    }
}

#[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
pub use pool::{for_each_part, run, size};

#[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
mod pool {
    use super::Job;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};

    /// Work big enough to be worth waking the pool for, outside a pass (≈ a millisecond on one core).
    const WAKE_WORTH: usize = 1 << 22;

    /// Runs `pass` with the pool's other threads standing by for the products inside it.
    /// Without a pool (one thread), or inside a pass already, it just runs `pass`.
    pub fn run<R>(pass: impl FnOnce() -> R) -> R {
        let helpers = rayon::current_num_threads().saturating_sub(1);
        if helpers == 0 || !CURRENT.get().is_null() {
            return pass();
        }
        let team = Team::new(helpers + 1);
        let team = &team;
        rayon::in_place_scope(|s| {
            for member in 1..=helpers {
                s.spawn(move |_| team.help(member));
            }
            // Dropped on return or unwind: the helpers stop, and the scope can end.
            let _member = Member::join(team);
            pass()
        })
    }

    /// Runs `job` for every part: over the team inside a pass; outside one, over a team of its own
    /// when `work` (multiply-adds) pays for waking the pool; otherwise here, in order. A single
    /// part always runs here: handing it to a helper would only make this thread wait.
    pub fn for_each_part(parts: usize, work: usize, job: Job) {
        if parts <= 1 {
            return (0..parts).for_each(job);
        }
        let current = CURRENT.get();
        if !current.is_null() {
            // SAFETY: CURRENT points at the team of the pass running on this thread (see Member).
            return unsafe { &*current }.share(parts, job);
        }
        if work >= WAKE_WORTH && rayon::current_num_threads() > 1 {
            return run(|| for_each_part(parts, work, job));
        }
        (0..parts).for_each(job);
    }

    /// How many threads share the parts of a job started here: the pool's inside a pass, else one.
    pub fn size() -> usize {
        if CURRENT.get().is_null() { 1 } else { rayon::current_num_threads() }
    }

    thread_local! {
        /// The team of the pass this thread is running, if any.
        pub(super) static CURRENT: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
    }

    /// Whether this thread is running a pass (for tests).
    #[cfg(test)]
    pub fn in_pass() -> Option<()> {
        (!CURRENT.get().is_null()).then_some(())
    }

    /// The shared state. A job's parts are cut into one run per member of the team, in order,
    /// each handed out front to back: member i starts on run i and reads its rows as one stream
    /// through memory. (Claimed from one counter, the parts had the threads take roughly
    /// alternate 10–50 KB stretches of a matrix; in runs, two threads decoded about 4–8% faster
    /// in the browser, by medians of alternating A/Bs.) A member whose run is done takes parts
    /// of the next runs. Each run's word packs the job's epoch, where the run ends and its next
    /// unclaimed part, so a member claims a part of exactly the job it saw, with one
    /// compare-and-swap. Run 0's word, written last, is the one that publishes a job.
    struct Team {
        runs: Box<[AtomicU64]>,
        /// The current job (a `Job` on the publishing thread's stack).
        job: AtomicPtr<()>,
        finished: AtomicUsize,
        quit: AtomicBool,
    }

    const FIELD: u32 = 20;
    const MASK: u64 = (1 << FIELD) - 1;

    impl Team {
        fn new(members: usize) -> Self {
            let runs = (0..members).map(|_| AtomicU64::new(0)).collect();
            Team { runs, job: AtomicPtr::default(), finished: AtomicUsize::new(0), quit: AtomicBool::new(false) }
        }

        /// Publishes a job, works on it, and returns once every part has finished.
        fn share(&self, parts: usize, job: Job) {
            assert!((parts as u64) < MASK, "a product split into {parts} parts");
            self.finished.store(0, Relaxed);
            let slot: Job = job;
            self.job.store(&slot as *const Job as *mut (), Relaxed);
            let epoch = ((self.runs[0].load(Relaxed) >> (2 * FIELD)) + 1) << (2 * FIELD);
            let members = self.runs.len();
            let bound = |i: usize| (i * parts / members) as u64;
            for i in (0..members).rev() {
                // Release (on run 0, the last): a member that sees the job's epoch there also sees
                // the job, the other runs and the reset count.
                self.runs[i].store(epoch | (bound(i + 1) << FIELD) | bound(i), if i == 0 { Release } else { Relaxed });
            }
            self.work(0);
            let mut spins = 0u32;
            while self.finished.load(Acquire) < parts {
                pause(&mut spins);
            }
        }

        /// Claims and runs parts of the current job, from run `member` first, then from the runs
        /// after it, until none is left; true if it ran any.
        fn work(&self, member: usize) -> bool {
            let epoch = self.runs[0].load(Acquire) >> (2 * FIELD);
            let (before, from_mine) = self.runs.split_at(member);
            let mut ran = false;
            for run in from_mine.iter().chain(before) {
                while let Some(part) = Self::claim(run, epoch) {
                    // SAFETY: the publisher of this job waits until every claimed part has
                    // finished, so the job (and the slot pointing at it) outlive this call.
                    let job = unsafe { *(self.job.load(Acquire) as *const Job) };
                    job(part);
                    self.finished.fetch_add(1, Release);
                    ran = true;
                }
            }
            ran
        }

        /// The next part of `run` if it belongs to the job of `epoch` and is left.
        fn claim(run: &AtomicU64, epoch: u64) -> Option<usize> {
            loop {
                let word = run.load(Acquire);
                let (end, next) = ((word >> FIELD) & MASK, word & MASK);
                if word >> (2 * FIELD) != epoch || next >= end {
                    return None;
                }
                if run.compare_exchange_weak(word, word + 1, AcqRel, Relaxed).is_ok() {
                    return Some(next as usize);
                }
            }
        }

        /// A helper's life: take parts as they are published, until the pass ends.
        fn help(&self, member: usize) {
            let mut spins = 0u32;
            while !self.quit.load(Acquire) {
                if self.work(member) {
                    spins = 0;
                } else {
                    pause(&mut spins);
                }
            }
        }
    }

    /// Spins after this many idle rounds (milliseconds, far longer than any gap between two
    /// products of a pass) become short sleeps: a pass whose thread died mid-way — a wasm trap
    /// ends no destructor — must not leave its helpers burning a core until the page restarts.
    const IDLE_SPINS: u32 = 1 << 18;

    /// A busy wait that gives the core away now and then: natively, tests run several passes at
    /// once on two cores, and a helper spinning there must not starve the thread it waits for.
    fn pause(spins: &mut u32) {
        *spins = spins.saturating_add(1);
        if *spins > IDLE_SPINS {
            std::thread::sleep(std::time::Duration::from_micros(100));
        } else if *spins % 1024 == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }

    /// This thread's membership of a pass's team, ended when dropped.
    struct Member<'a>(&'a Team);

    impl<'a> Member<'a> {
        fn join(team: &'a Team) -> Self {
            CURRENT.set(team);
            Member(team)
        }
    }

    impl Drop for Member<'_> {
        fn drop(&mut self) {
            CURRENT.set(std::ptr::null());
            self.0.quit.store(true, Release);
        }
    }
}

/// The plain browser build has one thread: a pass is just the pass, a product runs in order.
#[cfg(all(target_arch = "wasm32", not(feature = "threads")))]
pub fn run<R>(pass: impl FnOnce() -> R) -> R {
    pass()
}

#[cfg(all(target_arch = "wasm32", not(feature = "threads")))]
pub fn size() -> usize {
    1
}

#[cfg(all(target_arch = "wasm32", not(feature = "threads")))]
pub fn for_each_part(parts: usize, _work: usize, job: Job) {
    (0..parts).for_each(job);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Mutex;

    fn parts_seen(parts: usize) -> Vec<usize> {
        let seen = Mutex::new(Vec::new());
        run(|| for_each_part(parts, 0, &|p| seen.lock().unwrap().push(p)));
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        seen
    }

    #[test]
    fn every_part_runs_exactly_once_in_a_pass() {
        for parts in [0, 1, 2, 7, 64, 1000] {
            assert_eq!(parts_seen(parts), (0..parts).collect::<Vec<_>>());
        }
    }

    #[test]
    fn every_part_runs_exactly_once_when_the_team_has_more_members_than_parts_or_uneven_runs() {
        // Three members: runs of 0, 0 and 1 part for one part, uneven runs for 7 and 1000.
        for parts in [1, 2, 3, 4, 7, 1000] {
            assert_eq!(three_threads(|| parts_seen(parts)), (0..parts).collect::<Vec<_>>());
        }
    }

    #[test]
    fn many_products_in_one_pass_each_finish_before_the_next_begins() {
        let counts: Vec<AtomicUsize> = (0..500).map(|_| AtomicUsize::new(0)).collect();
        run(|| {
            for (i, count) in counts.iter().enumerate() {
                for_each_part(i % 13 + 1, 0, &|_| {
                    count.fetch_add(1, Relaxed);
                });
                assert_eq!(count.load(Relaxed), i % 13 + 1, "product {i} returned before all its parts ran");
            }
        });
    }

    #[test]
    fn outside_a_pass_small_work_runs_here_in_order() {
        let seen = Mutex::new(Vec::new());
        for_each_part(5, 10, &|p| seen.lock().unwrap().push(p));
        assert_eq!(seen.into_inner().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_single_part_runs_on_the_calling_thread_even_in_a_pass() {
        // Many in one pass, two helpers spinning for work all along (a pool of its own, so that
        // there are helpers on any machine).
        let elsewhere = AtomicUsize::new(0);
        three_threads(|| {
            let caller = std::thread::current().id();
            run(|| {
                for _ in 0..100_000 {
                    for_each_part(1, 0, &|_| {
                        if std::thread::current().id() != caller {
                            elsewhere.fetch_add(1, Relaxed);
                        }
                    });
                }
            })
        });
        assert_eq!(elsewhere.into_inner(), 0);
    }

    #[test]
    fn the_team_is_the_pools_threads_inside_a_pass_and_one_outside() {
        three_threads(|| {
            assert_eq!(size(), 1);
            assert_eq!(run(size), 3);
            assert_eq!(size(), 1, "and one again after it");
        });
    }

    fn three_threads<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(f)
    }

    #[test]
    fn a_panicking_pass_releases_its_helpers() {
        let caught = std::panic::catch_unwind(|| run(|| panic!("inside a pass")));
        assert!(caught.is_err());
        assert!(pool::in_pass().is_none(), "the thread is left outside any pass");
        assert_eq!(parts_seen(3), vec![0, 1, 2], "a later pass still works");
    }
}
