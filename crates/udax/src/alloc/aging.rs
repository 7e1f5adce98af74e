//! An aging workload for the allocator (bench P9 and test F6): fill the file
//! system with small and large files of random sizes, delete some at random, and
//! measure how much of newly allocated large files is 2 MiB-mappable.

use super::{AllocRequest, Allocator, BlockRange};
use crate::BLOCKS_PER_HUGE;

/// The result of [`aging_workload`].
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct AgingReport {
    /// Fill level reached by the aging phase (used / total).
    pub fill: f64,
    /// Share of the 2 MiB pieces of the new 64 MiB files that are aligned chunks.
    pub share_huge_mappable: f64,
    pub new_files: u64,
    pub free_chunks_after_aging: u64,
}

/// Age `alloc` to about `target_fill` with churn, then allocate new 64 MiB files
/// (as a file system would: one request per 2 MiB of file, goal = previous end)
/// until 15% of the space is used by them, and report the share mappable with
/// 2 MiB pages. Deterministic for a `seed`.
pub fn aging_workload(alloc: &Allocator, seed: u64, target_fill: f64) -> AgingReport {
    let mut rng = fastrand::Rng::with_seed(seed);
    let total = alloc.stats().total_blocks;
    let mut files: Vec<Vec<BlockRange>> = Vec::new();
    let used = |a: &Allocator| total - a.free_blocks();
    let mut rounds = 0u64;
    while (used(alloc) as f64) < target_fill * total as f64 && rounds < 1_000_000 {
        rounds += 1;
        let big = rng.u32(0..20) == 0;
        let len = if big {
            rng.u64(512..4096)
        } else {
            rng.u64(1..64)
        };
        let mut file = Vec::new();
        let mut left = len;
        while left > 0 {
            let step = left.min(16);
            let goal = file.last().map(|r: &BlockRange| r.end());
            match alloc.alloc(AllocRequest {
                len: step,
                goal,
                huge: big && step >= BLOCKS_PER_HUGE,
            }) {
                Ok(rs) => file.extend(rs),
                Err(_) => break,
            }
            left -= step;
        }
        files.push(file);
        // Churn: delete a random file now and then.
        if rng.u32(0..3) == 0 && !files.is_empty() {
            let f = files.swap_remove(rng.usize(..files.len()));
            for r in f {
                let _ = alloc.free(r);
            }
        }
    }
    let fill = used(alloc) as f64 / total as f64;
    let free_chunks_after_aging = alloc.stats().free_chunks;
    let mut pieces = 0u64;
    let mut good = 0u64;
    let mut new_files = 0;
    let budget = (total as f64 * 0.15) as u64;
    let start = used(alloc);
    'outer: while used(alloc) - start + 32 * BLOCKS_PER_HUGE <= budget {
        new_files += 1;
        let mut prev: Option<BlockRange> = None;
        for _ in 0..32 {
            let goal = prev.map(|r| r.end());
            let Ok(rs) = alloc.alloc(AllocRequest {
                len: BLOCKS_PER_HUGE,
                goal,
                huge: true,
            }) else {
                break 'outer;
            };
            pieces += 1;
            if rs.len() == 1 && rs[0].start % BLOCKS_PER_HUGE == 0 {
                good += 1;
            }
            prev = rs.last().copied();
        }
    }
    AgingReport {
        fill,
        share_huge_mappable: if pieces == 0 {
            0.0
        } else {
            good as f64 / pieces as f64
        },
        new_files,
        free_chunks_after_aging,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f6_aging_keeps_2mib_extents_available() {
        // 1 GiB area.
        let a = Allocator::new(512, 262_144);
        let r = aging_workload(&a, 7, 0.70);
        eprintln!("aging: {r:?}");
        assert!(r.fill >= 0.65, "{r:?}");
        assert!(r.new_files >= 1, "{r:?}");
        assert!(r.share_huge_mappable >= 0.90, "{r:?}");
    }
}
