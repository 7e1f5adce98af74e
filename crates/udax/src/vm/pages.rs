//! Device page references (SPEC M11): one per page mapped into a region, plus
//! one per pin (in-flight I/O, the analogue of get_user_pages). A block may be
//! freed or reused only when its count is zero; break-layouts waits for that.

use crate::sync::{Condvar, Mutex};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const CHUNK: u64 = 512;

#[derive(Debug, Default)]
pub struct PageRefs {
    m: Mutex<HashMap<u64, Box<[u32; CHUNK as usize]>>>,
    idle: Condvar,
}

impl PageRefs {
    fn each(&self, blk: u64, n: u64, mut f: impl FnMut(&mut u32)) {
        let mut m = self.m.lock();
        let mut b = blk;
        while b < blk + n {
            let c = b / CHUNK;
            let arr = m.entry(c).or_insert_with(|| Box::new([0; CHUNK as usize]));
            let end = ((c + 1) * CHUNK).min(blk + n);
            for x in &mut arr[(b % CHUNK) as usize..(end - c * CHUNK) as usize] {
                f(x);
            }
            if arr.iter().all(|x| *x == 0) {
                m.remove(&c);
            }
            b = end;
        }
    }

    /// Take a reference on blocks `[blk, blk+n)`.
    pub fn get(&self, blk: u64, n: u64) {
        self.each(blk, n, |x| *x += 1);
    }

    /// Drop a reference on blocks `[blk, blk+n)`.
    pub fn put(&self, blk: u64, n: u64) {
        let mut zero = false;
        self.each(blk, n, |x| {
            debug_assert!(*x > 0, "page reference underflow");
            *x = x.saturating_sub(1);
            zero |= *x == 0;
        });
        if zero {
            self.idle.notify_all();
        }
    }

    /// The first block of the range with references, and its count.
    pub fn busy(&self, blk: u64, n: u64) -> Option<(u64, u32)> {
        let m = self.m.lock();
        let mut b = blk;
        while b < blk + n {
            let c = b / CHUNK;
            let end = ((c + 1) * CHUNK).min(blk + n);
            if let Some(arr) = m.get(&c) {
                for x in b..end {
                    let v = arr[(x - c * CHUNK) as usize];
                    if v > 0 {
                        return Some((x, v));
                    }
                }
            }
            b = end;
        }
        None
    }

    /// Wait until no block of the range is referenced, for at most `timeout`;
    /// on timeout return the busy block and its count.
    pub fn wait_idle(&self, blk: u64, n: u64, timeout: Duration) -> Result<(), (u64, u32)> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(b) = self.busy(blk, n) else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(b);
            }
            let mut m = self.m.lock();
            let _ = self.idle_wait(&mut m, Duration::from_millis(10));
        }
    }

    #[cfg(not(loom))]
    fn idle_wait(
        &self,
        g: &mut crate::sync::MutexGuard<'_, HashMap<u64, Box<[u32; CHUNK as usize]>>>,
        d: Duration,
    ) -> bool {
        self.idle.wait_for(g, d).timed_out()
    }

    #[cfg(loom)]
    fn idle_wait(
        &self,
        g: &mut crate::sync::MutexGuard<'_, HashMap<u64, Box<[u32; CHUNK as usize]>>>,
        _d: Duration,
    ) -> bool {
        self.idle.wait(g);
        false
    }

    /// Blocks with a reference (for leak reports).
    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.m
            .lock()
            .values()
            .map(|a| a.iter().map(|x| *x as u64).sum::<u64>())
            .sum()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn page_refs_count_and_wait_for_idle() {
        let p = std::sync::Arc::new(PageRefs::default());
        p.get(510, 4);
        p.get(511, 1);
        assert_eq!(p.busy(0, 1000), Some((510, 1)));
        assert_eq!(p.busy(511, 1), Some((511, 2)));
        p.put(510, 4);
        assert_eq!(p.busy(0, 1000), Some((511, 1)));
        assert_eq!(
            p.wait_idle(500, 20, Duration::from_millis(20)),
            Err((511, 1))
        );
        let q = p.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            q.put(511, 1);
        });
        assert_eq!(p.wait_idle(500, 20, Duration::from_secs(5)), Ok(()));
        h.join().unwrap();
        assert_eq!(p.total(), 0);
    }
}
