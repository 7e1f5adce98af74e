//! A file's extent map ("iomap"): file block -> device block, or a hole.

/// One extent: `len` blocks from file block `file_blk` at device block `dev_blk`.
pub use crate::format::Extent;
use std::collections::BTreeMap;

/// What a file block maps to: the answer of the interface the fault engine
/// owns ([`crate::dax::iomap`]), which the file system serves.
pub use crate::dax::iomap::Lookup;

/// Extents keyed by first file block; never overlapping; adjacent extents that are
/// also contiguous on the device are merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtentMap {
    map: BTreeMap<u64, (u64, u64)>,
    blocks: u64,
}

impl ExtentMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Blocks mapped.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Number of extents.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Extent> + '_ {
        self.map.iter().map(|(&f, &(d, l))| Extent {
            file_blk: f,
            dev_blk: d,
            len: l,
        })
    }

    /// The extents that overlap file blocks `[a, b)`, in order.
    pub fn overlapping(&self, a: u64, b: u64) -> Vec<Extent> {
        let first = match self.map.range(..a).next_back() {
            Some((&f, &(_, l))) if f + l > a => f,
            _ => a,
        };
        self.map
            .range(first..b)
            .map(|(&f, &(d, l))| Extent {
                file_blk: f,
                dev_blk: d,
                len: l,
            })
            .collect()
    }

    /// One past the last mapped file block (0 when empty).
    pub fn end(&self) -> u64 {
        self.map.iter().next_back().map_or(0, |(&f, &(_, l))| f + l)
    }

    pub fn lookup(&self, fblk: u64) -> Lookup {
        if let Some((&f, &(d, l))) = self.map.range(..=fblk).next_back() {
            if fblk < f + l {
                return Lookup::Mapped {
                    dev_blk: d + (fblk - f),
                    len: f + l - fblk,
                };
            }
        }
        match self.map.range(fblk..).next() {
            Some((&f, _)) => Lookup::Hole { len: f - fblk },
            None => Lookup::Hole { len: u64::MAX },
        }
    }

    /// `true` if every block of `[fblk, fblk+len)` is mapped.
    pub fn is_mapped(&self, fblk: u64, len: u64) -> bool {
        let mut pos = fblk;
        let end = fblk + len;
        while pos < end {
            match self.lookup(pos) {
                Lookup::Mapped { len, .. } => pos += len,
                Lookup::Hole { .. } => return false,
            }
        }
        true
    }

    /// `true` if no block of `[fblk, fblk+len)` is mapped.
    pub fn is_hole(&self, fblk: u64, len: u64) -> bool {
        match self.lookup(fblk) {
            Lookup::Mapped { .. } => false,
            Lookup::Hole { len: h } => h >= len,
        }
    }

    /// Map `[fblk, fblk+len)` (which must be a hole) to device blocks from `dev_blk`.
    pub fn insert(&mut self, fblk: u64, dev_blk: u64, len: u64) -> Result<(), &'static str> {
        if len == 0 {
            return Err("empty extent");
        }
        if fblk.checked_add(len).is_none() || dev_blk.checked_add(len).is_none() {
            return Err("extent overflows");
        }
        if !self.is_hole(fblk, len) {
            return Err("extent overlaps a mapped range");
        }
        // Grow the previous extent in place when contiguous (an append): no
        // B-tree node is freed and allocated again.
        let key = match self.map.range_mut(..fblk).next_back() {
            Some((&pf, e)) if pf + e.1 == fblk && e.0 + e.1 == dev_blk => {
                e.1 += len;
                pf
            }
            _ => {
                self.map.insert(fblk, (dev_blk, len));
                fblk
            }
        };
        if let Some(&(nd, nl)) = self.map.get(&(fblk + len)) {
            if dev_blk + len == nd {
                self.map.remove(&(fblk + len));
                if let Some(e) = self.map.get_mut(&key) {
                    e.1 += nl;
                }
            }
        }
        self.blocks += len;
        Ok(())
    }

    /// Split the extent containing `fblk` (if any) so an extent starts at `fblk`.
    fn split_at(&mut self, fblk: u64) {
        if let Some((&f, &(d, l))) = self.map.range(..fblk).next_back() {
            if fblk < f + l {
                self.map.insert(f, (d, fblk - f));
                self.map.insert(fblk, (d + (fblk - f), f + l - fblk));
            }
        }
    }

    /// Unmap `[fblk, fblk+len)`; returns the freed device ranges `(dev_blk, len)`.
    pub fn remove(&mut self, fblk: u64, len: u64) -> Vec<(u64, u64)> {
        let end = fblk.saturating_add(len);
        self.split_at(fblk);
        self.split_at(end);
        let keys: Vec<u64> = self.map.range(fblk..end).map(|(&k, _)| k).collect();
        let mut freed = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some((d, l)) = self.map.remove(&k) {
                self.blocks -= l;
                freed.push((d, l));
            }
        }
        freed
    }

    /// Move every extent at or after `from` by `delta` blocks. For a negative delta
    /// the `|delta|` blocks before `from` must be a hole.
    pub fn shift(&mut self, from: u64, delta: i64) -> Result<(), &'static str> {
        self.split_at(from);
        if delta < 0 {
            let d = delta.unsigned_abs();
            if d > from || !self.is_hole(from - d, d) {
                return Err("collapse over mapped blocks");
            }
        } else if self.end().checked_add(delta as u64).is_none() {
            return Err("shift overflows");
        }
        let moved: Vec<(u64, (u64, u64))> = self.map.range(from..).map(|(&k, &v)| (k, v)).collect();
        for (k, _) in &moved {
            self.map.remove(k);
        }
        for (k, (d, l)) in moved {
            self.blocks -= l;
            let nk = k.checked_add_signed(delta).ok_or("shift overflows")?;
            self.insert(nk, d, l)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn insert_merges_contiguous_neighbours() {
        let mut m = ExtentMap::new();
        m.insert(0, 100, 2).unwrap();
        m.insert(4, 104, 2).unwrap();
        m.insert(2, 102, 2).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(
            m.lookup(3),
            Lookup::Mapped {
                dev_blk: 103,
                len: 3
            }
        );
        assert!(m.insert(5, 1, 1).is_err());
        assert_eq!(m.blocks(), 6);
    }

    #[test]
    fn remove_splits_and_returns_device_ranges() {
        let mut m = ExtentMap::new();
        m.insert(0, 100, 10).unwrap();
        assert_eq!(m.remove(3, 4), vec![(103, 4)]);
        assert_eq!(
            m.lookup(2),
            Lookup::Mapped {
                dev_blk: 102,
                len: 1
            }
        );
        assert_eq!(m.lookup(3), Lookup::Hole { len: 4 });
        assert_eq!(
            m.lookup(7),
            Lookup::Mapped {
                dev_blk: 107,
                len: 3
            }
        );
        assert_eq!(m.blocks(), 6);
    }

    #[test]
    fn shift_collapse_and_insert() {
        let mut m = ExtentMap::new();
        m.insert(0, 100, 10).unwrap();
        m.remove(2, 3);
        m.shift(5, -3).unwrap();
        assert_eq!(
            m.lookup(2),
            Lookup::Mapped {
                dev_blk: 105,
                len: 5
            }
        );
        assert_eq!(m.end(), 7);
        m.shift(1, 4).unwrap();
        assert_eq!(
            m.lookup(0),
            Lookup::Mapped {
                dev_blk: 100,
                len: 1
            }
        );
        assert_eq!(m.lookup(1), Lookup::Hole { len: 4 });
        assert_eq!(
            m.lookup(5),
            Lookup::Mapped {
                dev_blk: 101,
                len: 1
            }
        );
        assert!(m.shift(6, -2).is_err());
    }

    proptest! {
        /// The map agrees with a block-by-block model under random inserts/removes/shifts.
        #[test]
        fn extent_map_matches_model(ops in proptest::collection::vec((0u8..3, 0u64..64, 1u64..16), 1..60)) {
            let mut m = ExtentMap::new();
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            let mut next_dev = 1000u64;
            for (kind, f, l) in ops {
                match kind {
                    0 => {
                        let hole = (f..f + l).all(|b| !model.contains_key(&b));
                        let r = m.insert(f, next_dev, l);
                        prop_assert_eq!(r.is_ok(), hole);
                        if hole {
                            for i in 0..l { model.insert(f + i, next_dev + i); }
                        }
                        next_dev += l + (f % 2);
                    }
                    1 => {
                        let mut freed: Vec<u64> = m.remove(f, l).into_iter().flat_map(|(d, l)| d..d + l).collect();
                        let mut want: Vec<u64> = (f..f + l).filter_map(|b| model.remove(&b)).collect();
                        freed.sort_unstable();
                        want.sort_unstable();
                        prop_assert_eq!(freed, want);
                    }
                    _ => {
                        let d = (l % 4) as i64 - 2;
                        let ok_model = d >= 0 || ((d.unsigned_abs() <= f) && (f - d.unsigned_abs()..f).all(|b| !model.contains_key(&b)));
                        let r = m.shift(f, d);
                        prop_assert_eq!(r.is_ok(), ok_model);
                        if ok_model {
                            let moved: Vec<(u64, u64)> = model.range(f..).map(|(&k, &v)| (k, v)).collect();
                            for (k, _) in &moved { model.remove(k); }
                            for (k, v) in moved { model.insert(k.checked_add_signed(d).unwrap(), v); }
                        }
                    }
                }
                prop_assert_eq!(m.blocks(), model.len() as u64);
                for b in 0..100u64 {
                    let got = match m.lookup(b) { Lookup::Mapped { dev_blk, .. } => Some(dev_blk), Lookup::Hole { .. } => None };
                    prop_assert_eq!(got, model.get(&b).copied());
                }
            }
        }
    }
}
