//! Reference counts of shared device blocks (reflink, SPEC R1).
//!
//! A block referenced by one extent is the common case and is not listed: the
//! table holds only ranges referenced by two or more extents, with their count
//! (XFS's refcount btree keeps the same shape). It changes only through
//! [`RefTable::settle`], applied to the [`super::state::Effects`] of each
//! transaction by the running fs and by log replay alike; a checkpoint stores it
//! (record kind 4), and mount and fsck check it against the extent maps.

use rangemap::RangeMap;
use std::ops::Range;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefTable {
    map: RangeMap<u64, u32>,
}

impl RefTable {
    /// Build from checkpoint ranges `(start, len, refs)`; overlapping ranges are
    /// an error.
    pub fn from_ranges(v: &[(u64, u64, u32)]) -> Result<RefTable, String> {
        let mut t = RefTable::default();
        for &(s, l, c) in v {
            let e = s.checked_add(l).ok_or("refcount range overflows")?;
            if l == 0 || c < 2 {
                return Err(format!("refcount range {s}+{l} with count {c}"));
            }
            if t.map.overlaps(&(s..e)) {
                return Err(format!("refcount ranges overlap at block {s}"));
            }
            t.map.insert(s..e, c);
        }
        Ok(t)
    }

    /// The table as `(start, len, refs)` ranges, ascending.
    pub fn ranges(&self) -> Vec<(u64, u64, u32)> {
        self.map
            .iter()
            .map(|(r, &c)| (r.start, r.end - r.start, c))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Extents referencing device block `b` (1 if it is in use but not shared;
    /// the table cannot tell used from free).
    pub fn count(&self, b: u64) -> u32 {
        self.map.get(&b).copied().unwrap_or(1)
    }

    /// The shared parts of device blocks `[s, s+l)`, clipped to it.
    pub fn shared_in(&self, s: u64, l: u64) -> Vec<Range<u64>> {
        let r = s..s.saturating_add(l);
        self.map
            .overlapping(&r)
            .map(|(k, _)| k.start.max(r.start)..k.end.min(r.end))
            .collect()
    }

    /// One more extent references `[s, s+l)` (which is in use).
    fn add(&mut self, s: u64, l: u64) {
        let r = s..s + l;
        let mut pieces: Vec<(Range<u64>, u32)> = self
            .map
            .overlapping(&r)
            .map(|(k, &c)| (k.start.max(r.start)..k.end.min(r.end), c + 1))
            .collect();
        pieces.extend(self.map.gaps(&r).map(|g| (g, 2)));
        for (k, c) in pieces {
            self.map.insert(k, c);
        }
    }

    /// One extent fewer references `[s, s+l)`; returns the parts no extent
    /// references any more (free).
    fn release(&mut self, s: u64, l: u64) -> Vec<(u64, u64)> {
        let r = s..s + l;
        let freed: Vec<(u64, u64)> = self
            .map
            .gaps(&r)
            .map(|g| (g.start, g.end - g.start))
            .collect();
        let pieces: Vec<(Range<u64>, u32)> = self
            .map
            .overlapping(&r)
            .map(|(k, &c)| (k.start.max(r.start)..k.end.min(r.end), c - 1))
            .collect();
        for (k, c) in pieces {
            if c >= 2 {
                self.map.insert(k, c);
            } else {
                self.map.remove(k);
            }
        }
        freed
    }

    /// Apply one transaction's reference changes: every range in `added` gained
    /// a reference, every range in `released` lost one. References are added
    /// first, so a block moving between extents in one transaction is never
    /// counted free. Returns the ranges now free.
    pub fn settle(&mut self, added: &[(u64, u64)], released: &[(u64, u64)]) -> Vec<(u64, u64)> {
        for &(s, l) in added {
            self.add(s, l);
        }
        let mut freed = Vec::new();
        for &(s, l) in released {
            freed.extend(self.release(s, l));
        }
        freed
    }
}

/// How many extents reference each device block: `(range, count)` segments,
/// ascending, for the blocks referenced at least once.
pub fn coverage(extents: impl Iterator<Item = (u64, u64)>) -> Vec<(Range<u64>, u32)> {
    let mut ev: Vec<(u64, i64)> = Vec::new();
    for (s, l) in extents {
        ev.push((s, 1));
        ev.push((s.saturating_add(l), -1));
    }
    ev.sort_unstable();
    let mut out: Vec<(Range<u64>, u32)> = Vec::new();
    let mut depth = 0i64;
    let mut i = 0;
    while i < ev.len() {
        let at = ev[i].0;
        while i < ev.len() && ev[i].0 == at {
            depth += ev[i].1;
            i += 1;
        }
        if let Some(&(next, _)) = ev.get(i) {
            if depth > 0 && next > at {
                match out.last_mut() {
                    Some((r, c)) if r.end == at && *c == depth as u32 => r.end = next,
                    _ => out.push((at..next, depth as u32)),
                }
            }
        }
    }
    out
}

/// [`coverage`] of every extent of `inodes`.
pub(crate) fn coverage_of<'a>(
    inodes: impl IntoIterator<Item = &'a super::state::InodeData>,
) -> Vec<(Range<u64>, u32)> {
    coverage(
        inodes
            .into_iter()
            .flat_map(|d| d.map.iter().map(|e| (e.dev_blk, e.len))),
    )
}

/// Compare a table with the extents' coverage; returns each disagreement as
/// `(first block, table count, extents referencing it)`.
pub fn mismatches(table: &RefTable, cov: &[(Range<u64>, u32)]) -> Vec<(u64, u32, u32)> {
    let mut out = Vec::new();
    let mut want = RefTable::default();
    for (r, c) in cov {
        if *c >= 2 {
            want.map.insert(r.clone(), *c);
        }
    }
    if want == *table {
        return out;
    }
    // Find where they differ, range by range.
    let mut used = RangeMap::new();
    for (r, c) in cov {
        used.insert(r.clone(), *c);
    }
    for (r, &c) in table.map.iter() {
        for (k, &u) in used.overlapping(r) {
            if u != c {
                out.push((k.start.max(r.start), c, u));
            }
        }
        for g in used.gaps(r) {
            out.push((g.start, c, 0));
        }
    }
    for (r, &u) in want.map.iter() {
        for g in table.map.gaps(r) {
            out.push((g.start, 1, u));
        }
    }
    out.sort_unstable();
    out.dedup_by_key(|m| m.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn settle_counts_and_frees_at_zero() {
        let mut t = RefTable::default();
        // Block 10..14 used once; a clone shares 11..13.
        assert!(t.settle(&[(11, 2)], &[]).is_empty());
        assert_eq!(t.count(10), 1);
        assert_eq!(t.count(11), 2);
        assert_eq!(t.ranges(), vec![(11, 2, 2)]);
        // The original drops 10..14: 10 and 13 are free, 11..13 stay (count 1).
        assert_eq!(t.settle(&[], &[(10, 4)]), vec![(10, 1), (13, 1)]);
        assert!(t.is_empty());
        // Add before release: moving a reference within one transaction.
        t.settle(&[(20, 1)], &[]);
        assert!(t.settle(&[(20, 1)], &[(20, 1)]).is_empty());
        assert_eq!(t.count(20), 2);
    }

    #[test]
    fn coverage_and_mismatch_report() {
        let cov = coverage([(10u64, 4u64), (11, 2), (12, 5)].into_iter());
        assert_eq!(
            cov,
            vec![
                (10..11, 1),
                (11..12, 2),
                (12..13, 3),
                (13..14, 2),
                (14..17, 1)
            ]
        );
        let good = RefTable::from_ranges(&[(11, 1, 2), (12, 1, 3), (13, 1, 2)]).unwrap();
        assert!(mismatches(&good, &cov).is_empty());
        let bad = RefTable::from_ranges(&[(11, 3, 2)]).unwrap();
        assert_eq!(mismatches(&bad, &cov), vec![(12, 2, 3)]);
        let extra =
            RefTable::from_ranges(&[(11, 1, 2), (12, 1, 3), (13, 1, 2), (30, 1, 2)]).unwrap();
        assert_eq!(mismatches(&extra, &cov), vec![(30, 2, 0)]);
        assert!(RefTable::from_ranges(&[(1, 2, 2), (2, 1, 3)]).is_err());
        assert!(RefTable::from_ranges(&[(1, 2, 1)]).is_err());
    }

    proptest! {
        /// The table agrees with a per-block count model under random clones and
        /// releases, and frees exactly the blocks whose count reaches zero.
        #[test]
        fn ref_table_matches_model(ops in proptest::collection::vec((any::<bool>(), 0u64..40, 1u64..8), 1..80)) {
            let mut t = RefTable::default();
            let mut model = [0u32; 64];
            for (add, s, l) in ops {
                if add {
                    // Only blocks in use can gain a reference.
                    if !(s..s + l).all(|b| model[b as usize] > 0) {
                        for b in s..s + l { if model[b as usize] == 0 { model[b as usize] = 1; } }
                        continue; // newly allocated: not a table event
                    }
                    for b in s..s + l { model[b as usize] += 1; }
                    prop_assert!(t.settle(&[(s, l)], &[]).is_empty());
                } else {
                    if !(s..s + l).all(|b| model[b as usize] > 0) { continue; }
                    let freed: Vec<u64> = t.settle(&[], &[(s, l)]).into_iter().flat_map(|(a, n)| a..a + n).collect();
                    let mut want = Vec::new();
                    for b in s..s + l {
                        model[b as usize] -= 1;
                        if model[b as usize] == 0 { want.push(b); }
                    }
                    prop_assert_eq!(freed, want);
                }
                for b in 0..64u64 {
                    if model[b as usize] > 0 {
                        prop_assert_eq!(t.count(b), model[b as usize].max(1));
                    }
                }
            }
        }
    }
}
