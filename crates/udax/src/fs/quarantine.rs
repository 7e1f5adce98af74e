//! Freed blocks held back from reuse for processes that may still reach
//! them (docs/multiprocess.md, "Leases and recall": the quarantine).
//!
//! An owner's client maps the device file itself, so a client cut off for
//! not answering a recall while its process lives still shows, through its
//! mappings, the blocks of the files it had leases on. The owner names such
//! a process a *holder* ([`Fs::hold_frees_for`]) before any of those
//! blocks can be freed, then tells which blocks it may reach
//! ([`Fs::set_hold_reach`]: the blocks of those files at the cut-off). From
//! then on, a block freed ([`Fs::free_blocks`], the one place freed file
//! blocks go back to the allocator) that a holder may reach is kept out of
//! the allocator, for the holders that may reach it, until each of them has
//! exited ([`Fs::release_held`]). Until its reach is set, a holder reaches
//! every block (what is freed meanwhile is held for it to the end).
//!
//! Held blocks are free on the device (their frees are logged as any
//! other), so a new mount has them free: a restarted owner has no client of
//! the old one. A file system without holders (embedded mode, an owner with
//! no live cut-off client) pays one emptiness check per free.

use super::Fs;
use rangemap::RangeSet;
use std::collections::{BTreeMap, BTreeSet};

/// Freed blocks that are not in the allocator yet, under one lock
/// (`FsInner::freed`).
#[derive(Debug, Default)]
pub(crate) struct Freed {
    /// Freed blocks still referenced by a mapping or a pin of this process:
    /// given to the allocator once idle (a block is reused only at page
    /// count zero, M11).
    pub(crate) zombies: Vec<(u64, u64)>,
    /// Freed blocks held for live processes that may reach them.
    pub(crate) quarantine: Quarantine,
}

impl Freed {
    /// Whether block `blk` was freed and is not in the allocator yet.
    pub(crate) fn contains(&self, blk: u64) -> bool {
        self.zombies.iter().any(|&(s, l)| (s..s + l).contains(&blk))
            || self
                .quarantine
                .held
                .iter()
                .any(|(s, l, _)| (*s..s + l).contains(&blk))
    }
}

/// The holders and the blocks held for them.
#[derive(Debug, Default)]
pub(crate) struct Quarantine {
    /// Per holder: the device blocks it may reach (`None`: every block,
    /// until its reach is set).
    reach: BTreeMap<u64, Option<RangeSet<u64>>>,
    /// Held runs `(start, len, holders)`: each goes back to the allocator
    /// when its last holder is released.
    held: Vec<(u64, u64, BTreeSet<u64>)>,
}

impl Quarantine {
    /// Split freed `ranges`: what a holder may reach is held (for the
    /// holders that reach it); the rest is returned, to be freed.
    fn hold(&mut self, ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
        if self.reach.is_empty() {
            return ranges;
        }
        let mut free = Vec::new();
        for (s, l) in ranges {
            let e = s.saturating_add(l);
            // Where the holders' reaches begin and end inside the run.
            let mut cuts: BTreeSet<u64> = [s, e].into();
            for r in self.reach.values().flatten() {
                for x in r.overlapping(&(s..e)) {
                    cuts.insert(x.start.max(s));
                    cuts.insert(x.end.min(e));
                }
            }
            let cuts: Vec<u64> = cuts.into_iter().collect();
            for w in cuts.windows(2) {
                let (a, b) = (w[0], w[1]);
                let who: BTreeSet<u64> = self
                    .reach
                    .iter()
                    .filter(|(_, r)| r.as_ref().is_none_or(|r| r.contains(&a)))
                    .map(|(h, _)| *h)
                    .collect();
                if who.is_empty() {
                    free.push((a, b - a));
                } else {
                    self.held.push((a, b - a, who));
                }
            }
        }
        free
    }

    /// Blocks held.
    fn blocks(&self) -> u64 {
        self.held.iter().map(|(_, l, _)| l).sum()
    }
}

impl Fs {
    /// Start holding freed blocks for `holder` (an owner's client cut off
    /// while its process lives): every block freed from now on is held for
    /// it until [`Fs::set_hold_reach`] narrows that to the blocks it may
    /// reach, and each stays held until [`Fs::release_held`].
    pub(crate) fn hold_frees_for(&self, holder: u64) {
        self.inner
            .freed
            .lock()
            .quarantine
            .reach
            .entry(holder)
            .or_insert(None);
    }

    /// Narrow what is held for `holder` from now on to the freed blocks
    /// among `runs` (device `(start, len)`); what was held for it meanwhile
    /// stays held.
    pub(crate) fn set_hold_reach(&self, holder: u64, runs: impl IntoIterator<Item = (u64, u64)>) {
        let mut set = RangeSet::new();
        for (s, l) in runs {
            if l > 0 {
                set.insert(s..s.saturating_add(l));
            }
        }
        let mut f = self.inner.freed.lock();
        if let Some(r) = f.quarantine.reach.get_mut(&holder) {
            *r = Some(set);
        }
    }

    /// `holder` can reach no block any more (its process exited): the
    /// blocks held for it alone go back to the allocator.
    pub(crate) fn release_held(&self, holder: u64) {
        let back = {
            let mut f = self.inner.freed.lock();
            let q = &mut f.quarantine;
            if q.reach.remove(&holder).is_none() {
                return;
            }
            let mut back = Vec::new();
            q.held.retain_mut(|(s, l, who)| {
                who.remove(&holder);
                if who.is_empty() {
                    back.push((*s, *l));
                }
                !who.is_empty()
            });
            back
        };
        let n: u64 = back.iter().map(|(_, l)| l).sum();
        tracing::debug!("holder {holder} gone: {n} held blocks go back to free space");
        self.give_freed(back, false);
    }

    /// Blocks held for live holders (not free, not in use).
    pub fn held_blocks(&self) -> u64 {
        self.inner.freed.lock().quarantine.blocks()
    }

    /// Give freed `ranges` back to the allocator: after the holders have
    /// taken what they may reach (with `hold`), those still mapped or
    /// pinned somewhere in this process wait (as zombies) until they are
    /// idle.
    pub(super) fn give_freed(&self, ranges: Vec<(u64, u64)>, hold: bool) {
        let inner = &*self.inner;
        let mut give = Vec::new();
        {
            let mut f = inner.freed.lock();
            let ranges = if hold {
                f.quarantine.hold(ranges)
            } else {
                ranges
            };
            let old = std::mem::take(&mut f.zombies);
            for (s, l) in old.into_iter().chain(ranges) {
                if inner.dax.page_refs.busy(s, l).is_some() {
                    f.zombies.push((s, l));
                } else {
                    give.push((s, l));
                }
            }
        }
        for (start, len) in give {
            if let Err(e) = inner.alloc.free(crate::alloc::BlockRange { start, len }) {
                tracing::error!("freeing {start}+{len}: {e}");
            }
        }
    }

    /// Device runs of inode `ino`'s blocks (all of them, past its end too);
    /// none for an inode not in use.
    pub(crate) fn device_runs_of(&self, ino: u64) -> Vec<(u64, u64)> {
        match self.cell(ino) {
            Ok(c) => c.data.read().device_runs(0, u64::MAX).collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(runs: &[(u64, u64)]) -> Option<RangeSet<u64>> {
        Some(runs.iter().map(|&(s, l)| s..s + l).collect())
    }

    #[test]
    fn frees_are_held_for_the_holders_that_reach_them_until_each_is_released() {
        let mut q = Quarantine::default();
        assert_eq!(q.hold(vec![(10, 5)]), vec![(10, 5)], "no holder: all freed");
        q.reach.insert(1, set(&[(100, 10)]));
        q.reach.insert(2, set(&[(105, 10)]));
        // 90..100 nobody, 100..105 {1}, 105..110 {1,2}, 110..115 {2}, 115..120 nobody.
        let free = q.hold(vec![(90, 30)]);
        assert_eq!(free, vec![(90, 10), (115, 5)]);
        assert_eq!(q.blocks(), 15);
        // A holder whose reach is not set yet holds everything.
        q.reach.insert(3, None);
        assert!(q.hold(vec![(500, 2)]).is_empty());
        assert_eq!(q.blocks(), 17);
    }
}
