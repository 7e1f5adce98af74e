//! The block allocator: free extents with 2 MiB-chunk awareness (the WineFS policy).
//!
//! Free space is a set of extents (`start -> len`, merged on free) plus, per
//! 2 MiB chunk, the number of used blocks. Two indexes keep decisions cheap:
//! the fully free chunks (`whole`), and the partially used chunks (`partial`).
//!
//! * Huge requests (a multiple of 512 blocks, or `huge`) take fully free,
//!   2 MiB-aligned chunks — the chunk at `goal` if free, so a growing file stays
//!   contiguous — and only the tail under 512 blocks goes through the small path.
//! * Small requests are packed into partially used chunks: first the chunk of
//!   `goal` (appends stay together), else the fullest partial chunk with a run
//!   long enough; a new whole chunk is opened only when no partial chunk fits.
//! * With no whole chunk left, any free extents serve a request (largest first).
//!
//! Aged file systems thereby keep whole chunks for files that want 2 MiB mappings.

#[cfg(test)]
mod aging;

use crate::sync::Mutex;
use crate::BLOCKS_PER_HUGE;
use std::collections::{BTreeMap, BTreeSet};

/// A run of device blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct BlockRange {
    pub start: u64,
    pub len: u64,
}

impl BlockRange {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// What to allocate.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllocRequest {
    /// Blocks wanted.
    pub len: u64,
    /// A device block to start at if free (the block after the file's previous extent).
    pub goal: Option<u64>,
    /// Prefer whole 2 MiB chunks (a file that wants huge mappings): whole chunks
    /// for every 512 blocks, and a shorter request starts a fresh chunk unless
    /// `goal` is free (contiguity first).
    pub huge: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("no space left")]
    NoSpace,
    #[error("bad block range {start}+{len}: {why}")]
    BadRange {
        start: u64,
        len: u64,
        why: &'static str,
    },
}

/// Allocator statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AllocStats {
    pub total_blocks: u64,
    pub free_blocks: u64,
    /// Fully free, 2 MiB-aligned chunks.
    pub free_chunks: u64,
    /// Chunks partly used.
    pub partial_chunks: u64,
    pub largest_free_extent: u64,
}

#[derive(Debug)]
struct State {
    first: u64,
    count: u64,
    /// Free extents: start -> len (never adjacent: merged).
    free: BTreeMap<u64, u64>,
    free_blocks: u64,
    /// Used blocks per chunk (chunk index relative to `first`).
    used: Vec<u32>,
    /// Chunks with used == 0 and a full 512 blocks inside the area.
    whole: BTreeSet<u64>,
    /// Chunks with 0 < used < 512.
    partial: BTreeSet<u64>,
}

/// The allocator. Internally locked; `Send + Sync`.
#[derive(Debug)]
pub struct Allocator {
    st: Mutex<State>,
}

impl State {
    fn chunk_of(&self, blk: u64) -> u64 {
        (blk - self.first) / BLOCKS_PER_HUGE
    }
    fn chunk_cap(&self, c: u64) -> u64 {
        let start = c * BLOCKS_PER_HUGE;
        (self.count - start).min(BLOCKS_PER_HUGE)
    }
    /// Which index chunk `c` belongs in with `used` blocks used: `whole`
    /// (Some(true)), `partial` (Some(false)) or neither (full).
    fn class(&self, c: u64, used: u64) -> Option<bool> {
        let cap = self.chunk_cap(c);
        if used == 0 && cap == BLOCKS_PER_HUGE {
            Some(true)
        } else {
            (used < cap).then_some(false)
        }
    }
    /// Move chunk `c` to the index its used count says, from the one `was`
    /// (its class before the count changed) put it in.
    fn reindex(&mut self, c: u64, was: Option<bool>) {
        let now = self.class(c, self.used[c as usize] as u64);
        if now == was {
            return;
        }
        match was {
            Some(true) => self.whole.remove(&c),
            Some(false) => self.partial.remove(&c),
            None => false,
        };
        match now {
            Some(true) => self.whole.insert(c),
            Some(false) => self.partial.insert(c),
            None => false,
        };
    }
    /// Account `r` as used (`sign` +1) or free (-1) in the chunk counters.
    fn account(&mut self, r: BlockRange, used: bool) {
        let mut b = r.start;
        while b < r.end() {
            let c = self.chunk_of(b);
            let cend = self.first + (c + 1) * BLOCKS_PER_HUGE;
            let n = r.end().min(cend) - b;
            let was = self.class(c, self.used[c as usize] as u64);
            if used {
                self.used[c as usize] += n as u32;
            } else {
                self.used[c as usize] -= n as u32;
            }
            self.reindex(c, was);
            b += n;
        }
    }
    /// The free extent containing `blk`, if any.
    fn free_extent_at(&self, blk: u64) -> Option<(u64, u64)> {
        let (&s, &l) = self.free.range(..=blk).next_back()?;
        (blk < s + l).then_some((s, l))
    }
    /// Take `r` (which must lie inside one free extent).
    fn take(&mut self, r: BlockRange) {
        let (s, l) = self
            .free_extent_at(r.start)
            .expect("take of a non-free range");
        debug_assert!(r.end() <= s + l);
        // The map is changed in place where it can be, and inserts come
        // before removes, so taking from the only free extent never empties
        // the map (which frees its B-tree node, to allocate it again).
        if s + l > r.end() {
            self.free.insert(r.end(), s + l - r.end());
        }
        if r.start > s {
            if let Some(head) = self.free.get_mut(&s) {
                *head = r.start - s;
            }
        } else {
            self.free.remove(&s);
        }
        self.free_blocks -= r.len;
        self.account(r, true);
    }
    fn give(&mut self, r: BlockRange) {
        // Merge with the neighbours: the previous extent grows in place.
        let next = self.free.get(&r.end()).copied();
        let len = r.len + next.unwrap_or(0);
        match self.free.range_mut(..r.start).next_back() {
            Some((&ps, pl)) if ps + *pl == r.start => *pl += len,
            _ => {
                self.free.insert(r.start, len);
            }
        }
        if next.is_some() {
            self.free.remove(&r.end());
        }
        self.free_blocks += r.len;
        self.account(r, false);
    }
    fn is_free_range(&self, r: BlockRange) -> bool {
        self.free_extent_at(r.start)
            .is_some_and(|(s, l)| r.end() <= s + l)
    }
    fn check(&self, r: BlockRange) -> Result<(), AllocError> {
        let bad = |why| AllocError::BadRange {
            start: r.start,
            len: r.len,
            why,
        };
        if r.len == 0 {
            return Err(bad("empty"));
        }
        if r.start < self.first || r.end() > self.first + self.count || r.end() < r.start {
            return Err(bad("outside the data area"));
        }
        Ok(())
    }
    /// Up to `want` blocks from the free extent containing `blk` starting at `blk`.
    fn run_at(&self, blk: u64, want: u64) -> Option<BlockRange> {
        let (s, l) = self.free_extent_at(blk)?;
        Some(BlockRange {
            start: blk,
            len: (s + l - blk).min(want),
        })
    }
    /// Free run inside chunk `c` of at least `want` blocks (best fit), or the longest.
    fn run_in_chunk(&self, c: u64, want: u64) -> Option<BlockRange> {
        let cs = self.first + c * BLOCKS_PER_HUGE;
        let ce = cs + self.chunk_cap(c);
        let mut best: Option<BlockRange> = None;
        let mut longest: Option<BlockRange> = None;
        let from = self.free_extent_at(cs).map_or(cs, |(s, _)| s);
        for (&s, &l) in self.free.range(from..ce) {
            let a = s.max(cs);
            let b = (s + l).min(ce);
            if b <= a {
                continue;
            }
            let r = BlockRange {
                start: a,
                len: b - a,
            };
            if r.len >= want && best.is_none_or(|x| r.len < x.len) {
                best = Some(r);
            }
            if longest.is_none_or(|x| r.len > x.len) {
                longest = Some(r);
            }
        }
        best.map(|r| BlockRange {
            start: r.start,
            len: want,
        })
        .or(longest)
    }

    fn alloc_small(
        &mut self,
        mut want: u64,
        goal: Option<u64>,
        prefer_whole: bool,
        out: &mut Vec<BlockRange>,
    ) {
        // 1. Right at the goal.
        if let Some(g) = goal.filter(|&g| g >= self.first && g < self.first + self.count) {
            if let Some(r) = self.run_at(g, want) {
                self.take(r);
                out.push(r);
                want -= r.len;
            }
        }
        // 1b. A file starting a 2 MiB-aligned piece: begin a whole chunk, so the
        //     appends that follow (goal = previous end) fill it contiguously.
        if want > 0 && prefer_whole {
            if let Some(&c) = self.whole.iter().next() {
                let r = BlockRange {
                    start: self.first + c * BLOCKS_PER_HUGE,
                    len: want.min(BLOCKS_PER_HUGE),
                };
                self.take(r);
                out.push(r);
                want -= r.len;
            }
        }
        while want > 0 {
            // 2. The partial chunk of the goal, then the fullest partial chunk that fits.
            let goal_chunk = goal
                .filter(|&g| g >= self.first && g < self.first + self.count)
                .map(|g| self.chunk_of(g))
                .filter(|c| self.partial.contains(c));
            let mut pick =
                goal_chunk.and_then(|c| self.run_in_chunk(c, want).filter(|r| r.len >= want));
            if pick.is_none() {
                let mut best: Option<(u32, BlockRange)> = None;
                for &c in self.partial.iter() {
                    if let Some(r) = self.run_in_chunk(c, want).filter(|r| r.len >= want) {
                        let u = self.used[c as usize];
                        if best.is_none_or(|(bu, _)| u > bu) {
                            best = Some((u, r));
                        }
                        if u as u64 + want >= BLOCKS_PER_HUGE {
                            break; // cannot do better than filling a chunk
                        }
                    }
                }
                pick = best.map(|(_, r)| r);
            }
            // 3. A new whole chunk.
            if pick.is_none() {
                if let Some(&c) = self.whole.iter().next() {
                    pick = Some(BlockRange {
                        start: self.first + c * BLOCKS_PER_HUGE,
                        len: want.min(BLOCKS_PER_HUGE),
                    });
                }
            }
            // 4. Anything: the largest free extent.
            if pick.is_none() {
                pick = self
                    .free
                    .iter()
                    .max_by_key(|(_, &l)| l)
                    .map(|(&s, &l)| BlockRange {
                        start: s,
                        len: l.min(want),
                    });
            }
            let r = pick.expect("free_blocks >= want was checked");
            self.take(r);
            out.push(r);
            want -= r.len;
        }
    }

    fn alloc_huge(&mut self, want: u64, goal: Option<u64>, out: &mut Vec<BlockRange>) -> u64 {
        let mut chunks = want / BLOCKS_PER_HUGE;
        let mut next =
            goal.filter(|g| (g - self.first.min(*g)) % BLOCKS_PER_HUGE == 0 && *g >= self.first);
        while chunks > 0 {
            let c = match next
                .map(|g| self.chunk_of(g))
                .filter(|c| self.whole.contains(c))
            {
                Some(c) => c,
                None => match self.whole.iter().next() {
                    Some(&c) => c,
                    None => break,
                },
            };
            let r = BlockRange {
                start: self.first + c * BLOCKS_PER_HUGE,
                len: BLOCKS_PER_HUGE,
            };
            self.take(r);
            match out.last_mut() {
                Some(last) if last.end() == r.start => last.len += r.len,
                _ => out.push(r),
            }
            next = Some(r.end());
            chunks -= 1;
        }
        want - (want / BLOCKS_PER_HUGE - chunks) * BLOCKS_PER_HUGE
    }
}

impl Allocator {
    /// An allocator for blocks `[first, first + count)`, all free. `first` should be
    /// 2 MiB aligned (the data area is).
    pub fn new(first: u64, count: u64) -> Self {
        let chunks = count.div_ceil(BLOCKS_PER_HUGE);
        let mut st = State {
            first,
            count,
            free: BTreeMap::new(),
            free_blocks: count,
            used: vec![0; chunks as usize],
            whole: BTreeSet::new(),
            partial: BTreeSet::new(),
        };
        if count > 0 {
            st.free.insert(first, count);
        }
        for c in 0..chunks {
            st.reindex(c, None);
        }
        Allocator { st: Mutex::new(st) }
    }

    /// Mark `r` used (mount-time rebuild from the extent maps).
    pub fn mark_used(&self, r: BlockRange) -> Result<(), AllocError> {
        let mut st = self.st.lock();
        st.check(r)?;
        if !st.is_free_range(r) {
            return Err(AllocError::BadRange {
                start: r.start,
                len: r.len,
                why: "already in use",
            });
        }
        st.take(r);
        Ok(())
    }

    /// Allocate `req.len` blocks, possibly as several ranges; all or nothing.
    pub fn alloc(&self, req: AllocRequest) -> Result<Vec<BlockRange>, AllocError> {
        let mut st = self.st.lock();
        if req.len == 0 {
            return Ok(Vec::new());
        }
        if st.free_blocks < req.len {
            return Err(AllocError::NoSpace);
        }
        let mut out = Vec::with_capacity(2);
        let mut want = req.len;
        if req.huge || req.len >= BLOCKS_PER_HUGE {
            want = st.alloc_huge(req.len, req.goal, &mut out);
        }
        if want > 0 {
            let goal = out.last().map(|r| r.end()).or(req.goal);
            let prefer_whole = req.huge && out.is_empty();
            st.alloc_small(want, goal, prefer_whole, &mut out);
        }
        Ok(out)
    }

    /// Return `r` to free space.
    pub fn free(&self, r: BlockRange) -> Result<(), AllocError> {
        let mut st = self.st.lock();
        st.check(r)?;
        // Every block of r must be in use: no free extent may intersect it.
        let overlaps = st
            .free
            .range(..r.end())
            .next_back()
            .is_some_and(|(&s, &l)| s + l > r.start);
        if overlaps {
            return Err(AllocError::BadRange {
                start: r.start,
                len: r.len,
                why: "double free",
            });
        }
        st.give(r);
        Ok(())
    }

    pub fn free_blocks(&self) -> u64 {
        self.st.lock().free_blocks
    }

    pub fn is_free(&self, block: u64) -> bool {
        self.st.lock().free_extent_at(block).is_some()
    }

    /// The free parts of `r` (blocks a file's extent holds that free space
    /// also lists: damage, kept out with [`Allocator::mark_used`]).
    pub fn free_within(&self, r: BlockRange) -> Vec<BlockRange> {
        let st = self.st.lock();
        let from = st.free_extent_at(r.start).map_or(r.start, |(s, _)| s);
        st.free
            .range(from..r.end())
            .filter_map(|(&s, &l)| {
                let (a, b) = (s.max(r.start), (s + l).min(r.end()));
                (a < b).then_some(BlockRange {
                    start: a,
                    len: b - a,
                })
            })
            .collect()
    }

    pub fn stats(&self) -> AllocStats {
        let st = self.st.lock();
        AllocStats {
            total_blocks: st.count,
            free_blocks: st.free_blocks,
            free_chunks: st.whole.len() as u64,
            partial_chunks: st.partial.len() as u64,
            largest_free_extent: st.free.values().copied().max().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(len: u64) -> AllocRequest {
        AllocRequest {
            len,
            goal: None,
            huge: false,
        }
    }

    #[test]
    fn f6_freed_space_is_reused() {
        let a = Allocator::new(512, 1024);
        let r = a.alloc(req(1024)).unwrap();
        assert!(matches!(a.alloc(req(1)), Err(AllocError::NoSpace)));
        for x in r {
            a.free(x).unwrap();
        }
        assert_eq!(
            a.alloc(req(1024))
                .unwrap()
                .iter()
                .map(|r| r.len)
                .sum::<u64>(),
            1024
        );
    }

    #[test]
    fn f6_small_allocations_pack_into_partial_chunks() {
        let a = Allocator::new(0, 512 * 8);
        for _ in 0..300 {
            a.alloc(req(1)).unwrap();
        }
        let s = a.stats();
        assert_eq!(s.partial_chunks, 1);
        assert_eq!(s.free_chunks, 7);
    }

    #[test]
    fn f6_huge_request_gets_aligned_chunks() {
        let a = Allocator::new(512, 512 * 8);
        a.alloc(req(3)).unwrap();
        let r = a
            .alloc(AllocRequest {
                len: 1024 + 5,
                goal: None,
                huge: true,
            })
            .unwrap();
        assert_eq!(r[0].start % 512, 0);
        assert!(r[0].len >= 1024);
        assert_eq!(r.iter().map(|r| r.len).sum::<u64>(), 1029);
    }

    #[test]
    fn goal_keeps_appends_contiguous() {
        let a = Allocator::new(0, 512 * 4);
        let r1 = a.alloc(req(4)).unwrap()[0];
        a.alloc(req(4)).unwrap(); // someone else
        let r2 = a
            .alloc(AllocRequest {
                len: 4,
                goal: Some(r1.end() + 4),
                huge: false,
            })
            .unwrap()[0];
        assert_eq!(r2.start, r1.end() + 4);
    }

    #[test]
    fn nospace_leaves_allocator_unchanged_and_double_free_is_refused() {
        let a = Allocator::new(0, 600);
        let s = a.stats();
        assert_eq!(a.alloc(req(601)), Err(AllocError::NoSpace));
        assert_eq!(a.stats(), s);
        let r = a.alloc(req(10)).unwrap()[0];
        a.free(r).unwrap();
        assert!(a.free(r).is_err());
        a.mark_used(BlockRange { start: 0, len: 10 }).unwrap();
        assert!(a.mark_used(BlockRange { start: 5, len: 10 }).is_err());
    }

    proptest! {
        #[test]
        fn allocator_matches_bitmap_model(ops in proptest::collection::vec((any::<bool>(), 1u64..700, any::<bool>(), any::<u16>()), 1..80)) {
            let total = 512 * 6 + 100;
            let a = Allocator::new(512, total);
            let mut model = vec![false; total as usize];
            let mut held: Vec<BlockRange> = Vec::new();
            for (is_alloc, len, huge, pick) in ops {
                if is_alloc || held.is_empty() {
                    let goal = held.get(pick as usize % held.len().max(1)).map(|r| r.end());
                    let free = model.iter().filter(|&&u| !u).count() as u64;
                    match a.alloc(AllocRequest { len, goal, huge }) {
                        Ok(rs) => {
                            prop_assert!(free >= len);
                            prop_assert_eq!(rs.iter().map(|r| r.len).sum::<u64>(), len);
                            for r in rs {
                                for b in r.start..r.end() {
                                    let i = (b - 512) as usize;
                                    prop_assert!(!model[i], "block {} allocated twice", b);
                                    model[i] = true;
                                }
                                held.push(r);
                            }
                        }
                        Err(_) => prop_assert!(free < len),
                    }
                } else {
                    let r = held.swap_remove(pick as usize % held.len());
                    a.free(r).unwrap();
                    for b in r.start..r.end() { model[(b - 512) as usize] = false; }
                }
                let free = model.iter().filter(|&&u| !u).count() as u64;
                prop_assert_eq!(a.free_blocks(), free);
                let whole = (0..6).filter(|c| model[c * 512..(c + 1) * 512].iter().all(|&u| !u)).count() as u64;
                prop_assert_eq!(a.stats().free_chunks, whole);
            }
        }
    }
}
