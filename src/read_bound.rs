//! The memory bound of a decode step, measured: a decode step multiplies by every weight matrix
//! once, so it cannot take less time than reading all their bytes does. `read_all` reads them,
//! as plainly as the machine allows (wide loads, a sum per lane, nothing else), over the
//! same team of threads the products use. The bench times it in the same worker and session as
//! the decoding it compares with: "decode at N% of the read bound" is then a ratio of two
//! figures measured side by side, not of one against a datasheet.

use crate::team::{self, Disjoint};

const PARTS_PER_THREAD: usize = 16;

/// The bytes of `runs`, each read once per pass, `passes` times in one pass of the team (as a
/// decode step's products are: the helper threads are woken once, not per read); returns the
/// sum of the last pass as little-endian u64 words (bytes past the last whole word left out),
/// which the caller keeps so that the reads are not optimised away. The same on any number of
/// threads.
pub fn read_all(runs: &[&[u8]], passes: usize) -> u64 {
    team::run(|| (0..passes).fold(0, |_, _| read_once(runs)))
}

fn read_once(runs: &[&[u8]]) -> u64 {
    // More parts than threads, so that a helper joining late still takes a share of the rest.
    // Alone, this did not stop two-thread reads from often running at one thread's speed; waking
    // the team once for several passes (`read_all`) did.
    let parts = PARTS_PER_THREAD * team::size();
    let mut sums = vec![0u64; parts];
    let out = Disjoint::new(&mut sums);
    let job = |part: usize| {
        let sum = runs.iter().map(|run| {
            let words = run.as_chunks::<8>().0;
            let (from, to) = (part * words.len() / parts, (part + 1) * words.len() / parts);
            sum_words(&words[from..to])
        });
        // SAFETY: element `part` is this part's alone.
        unsafe { out.part(part, 1)[0] = sum.fold(0, u64::wrapping_add) };
    };
    team::for_each_part(parts, 0, &job);
    sums.into_iter().fold(0, u64::wrapping_add)
}

/// Four independent sums, so the adds do not wait on each other (the compiler makes lanes of
/// them; one running sum would be a chain of dependent adds). Not inlined: a browser compiles
/// wasm quickly first and optimises a function once it has run a while, and a call already
/// running keeps the code it started with; called once per run and part, this function is
/// optimised early in the first read rather than in a later one.
#[inline(never)]
fn sum_words(words: &[[u8; 8]]) -> u64 {
    let (fours, rest) = words.as_chunks::<4>();
    let mut acc = [0u64; 4];
    for four in fours {
        for (a, w) in acc.iter_mut().zip(four) {
            *a = a.wrapping_add(u64::from_le_bytes(*w));
        }
    }
    rest.iter().fold(acc.into_iter().fold(0, u64::wrapping_add), |s, w| s.wrapping_add(u64::from_le_bytes(*w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_sum(runs: &[&[u8]]) -> u64 {
        runs.iter().flat_map(|r| r.chunks_exact(8)).fold(0u64, |s, w| s.wrapping_add(u64::from_le_bytes(w.try_into().unwrap())))
    }

    #[test]
    fn every_whole_word_is_read_once_on_any_number_of_threads() {
        let bytes: Vec<u8> = (0..100_003u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let runs: Vec<&[u8]> = vec![&bytes[..], &bytes[5..77], &bytes[..7], &bytes[1000..]];
        let want = plain_sum(&runs);
        assert_eq!(read_all(&runs, 1), want);
        for (threads, passes) in [(2, 1), (3, 2)] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            assert_eq!(pool.install(|| read_all(&runs, passes)), want, "{threads} threads");
        }
    }
}
