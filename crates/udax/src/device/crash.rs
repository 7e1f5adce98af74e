//! `CrashDevice`: a device that remembers what would survive a power failure.
//!
//! Model (x86 persistent memory with ADR): a store changes a 64-byte cache line in
//! the CPU cache; `flush` starts its write-back; `fence` waits for every flush issued
//! before it, so flushed lines are durable after the fence. A line that was stored
//! but not yet made durable may or may not have reached the media at a crash (the
//! cache may have evicted it at any time), with the content of its last store.
//!
//! The device records every store, flush and fence. [`CrashDevice::crash_image`]
//! rebuilds the media content as of a crash just before fence number `point`
//! (counted from [`CrashDevice::start_recording`]), keeping the not-yet-durable
//! lines chosen by [`Survivors`].

use super::{
    check_range, Device, DeviceError, DeviceInfo, DeviceKind, FlushInstr, PersistenceDomain,
};
use crate::sync::Mutex;
use crate::CACHE_LINE;
use std::collections::BTreeMap;

/// Which not-yet-durable cache lines reach the media at the crash.
#[derive(Clone, Debug)]
pub enum Survivors {
    /// None: only fenced data survives.
    None,
    /// All of them (as if the cache was written back just in time).
    All,
    /// Each independently with probability 1/2, from a seeded generator.
    Random { seed: u64 },
    /// Line `i` (in ascending address order of the pending lines) survives if `mask[i]`.
    Mask(Vec<bool>),
}

#[derive(Debug)]
enum Event {
    Write { off: u64, data: Vec<u8> },
    Zero { off: u64, len: u64 },
    Flush { off: u64, len: u64 },
    Fence,
}

#[derive(Debug)]
struct Inner {
    /// The media content when the device was created.
    base: Vec<u8>,
    /// What loads see now.
    current: Vec<u8>,
    events: Vec<Event>,
    fences: usize,
    /// Fence count at `start_recording`.
    mark: usize,
}

/// The crash-simulating test device.
#[derive(Debug)]
pub struct CrashDevice {
    info: DeviceInfo,
    inner: Mutex<Inner>,
    bad: super::BadList,
}

fn lines(off: u64, len: u64) -> std::ops::Range<u64> {
    if len == 0 {
        return 0..0;
    }
    off / CACHE_LINE..(off + len).div_ceil(CACHE_LINE)
}

impl CrashDevice {
    /// A zero-filled device of `len` bytes (a multiple of 4096).
    pub fn new(len: u64) -> Self {
        Self::from_image(vec![0; len as usize])
    }

    /// A device whose media (durable) content is `image`.
    pub fn from_image(image: Vec<u8>) -> Self {
        CrashDevice {
            info: DeviceInfo {
                kind: DeviceKind::Crash,
                path: "crash-sim".into(),
                len: image.len() as u64,
                persistence: PersistenceDomain::CpuCache,
                flush: FlushInstr::None,
                page_size: crate::BLOCK_SIZE,
            },
            inner: Mutex::new(Inner {
                base: image.clone(),
                current: image,
                events: Vec::new(),
                fences: 0,
                mark: 0,
            }),
            bad: Default::default(),
        }
    }

    /// Start counting crash points (fences) from now.
    pub fn start_recording(&self) {
        let mut i = self.inner.lock();
        i.mark = i.fences;
    }

    /// Fences since [`start_recording`](Self::start_recording). Crash points are
    /// `0..=crash_points()`; the last one is "after everything".
    pub fn crash_points(&self) -> usize {
        let i = self.inner.lock();
        i.fences - i.mark
    }

    /// Lines stored but not durable at crash point `point`.
    pub fn pending_lines(&self, point: usize) -> usize {
        self.replay(point).1.len()
    }

    /// The media content after a crash just before fence `point` (relative to the
    /// recording mark) completed; `point == crash_points()` means "now".
    pub fn crash_image(&self, point: usize, survivors: &Survivors) -> Vec<u8> {
        let (mut media, pending) = self.replay(point);
        let mut rng = match survivors {
            Survivors::Random { seed } => Some(fastrand::Rng::with_seed(*seed)),
            _ => None,
        };
        for (i, (line, content)) in pending.into_iter().enumerate() {
            let keep = match survivors {
                Survivors::None => false,
                Survivors::All => true,
                Survivors::Random { .. } => rng.as_mut().is_some_and(|r| r.bool()),
                Survivors::Mask(m) => m.get(i).copied().unwrap_or(false),
            };
            if keep {
                let at = (line * CACHE_LINE) as usize;
                let end = (at + CACHE_LINE as usize).min(media.len());
                media[at..end].copy_from_slice(&content[..end - at]);
            }
        }
        media
    }

    /// The current content as a crash right now would leave it.
    pub fn crash_now(&self, survivors: &Survivors) -> Vec<u8> {
        self.crash_image(self.crash_points(), survivors)
    }

    /// Replay events up to fence `mark + point`: (durable media, pending lines with
    /// their latest content).
    fn replay(&self, point: usize) -> (Vec<u8>, BTreeMap<u64, Vec<u8>>) {
        let i = self.inner.lock();
        let stop = i.mark + point;
        let mut media = i.base.clone();
        let mut view = i.base.clone();
        // line -> flushed since its last store?
        let mut pending: BTreeMap<u64, bool> = BTreeMap::new();
        let mut fences = 0usize;
        for ev in &i.events {
            match ev {
                Event::Write { off, data } => {
                    view[*off as usize..*off as usize + data.len()].copy_from_slice(data);
                    for l in lines(*off, data.len() as u64) {
                        pending.insert(l, false);
                    }
                }
                Event::Zero { off, len } => {
                    view[*off as usize..(*off + *len) as usize].fill(0);
                    for l in lines(*off, *len) {
                        pending.insert(l, false);
                    }
                }
                Event::Flush { off, len } => {
                    for l in lines(*off, *len) {
                        if let Some(f) = pending.get_mut(&l) {
                            *f = true;
                        }
                    }
                }
                Event::Fence => {
                    if fences == stop {
                        break;
                    }
                    fences += 1;
                    pending.retain(|&l, flushed| {
                        if *flushed {
                            let a = (l * CACHE_LINE) as usize;
                            let b = (a + CACHE_LINE as usize).min(media.len());
                            media[a..b].copy_from_slice(&view[a..b]);
                        }
                        !*flushed
                    });
                }
            }
        }
        let out = pending
            .into_keys()
            .map(|l| {
                let a = (l * CACHE_LINE) as usize;
                let b = (a + CACHE_LINE as usize).min(view.len());
                let mut c = view[a..b].to_vec();
                c.resize(CACHE_LINE as usize, 0);
                (l, c)
            })
            .collect();
        (media, out)
    }
}

impl Device for CrashDevice {
    fn bad_list(&self) -> &super::BadList {
        &self.bad
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn fence_is_global(&self) -> bool {
        true
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        check_range(off, buf.len() as u64, self.info.len)?;
        let i = self.inner.lock();
        buf.copy_from_slice(&i.current[off as usize..off as usize + buf.len()]);
        Ok(())
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<(), DeviceError> {
        check_range(off, data.len() as u64, self.info.len)?;
        let mut i = self.inner.lock();
        i.current[off as usize..off as usize + data.len()].copy_from_slice(data);
        i.events.push(Event::Write {
            off,
            data: data.to_vec(),
        });
        Ok(())
    }

    fn zero(&self, off: u64, len: u64) -> Result<(), DeviceError> {
        check_range(off, len, self.info.len)?;
        let mut i = self.inner.lock();
        i.current[off as usize..(off + len) as usize].fill(0);
        i.events.push(Event::Zero { off, len });
        Ok(())
    }

    fn flush(&self, off: u64, len: u64) {
        self.inner.lock().events.push(Event::Flush { off, len });
    }

    fn fence(&self) -> Result<(), DeviceError> {
        let mut i = self.inner.lock();
        i.events.push(Event::Fence);
        i.fences += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f7_unflushed_store_lost_without_survivors() {
        let d = CrashDevice::new(4096);
        d.write(0, &[1; 10]).unwrap();
        assert_eq!(d.crash_now(&Survivors::None)[0], 0);
        assert_eq!(d.crash_now(&Survivors::All)[0], 1);
    }

    #[test]
    fn f7_flush_without_fence_is_not_durable_but_fenced_is() {
        let d = CrashDevice::new(4096);
        d.write(64, &[2; 64]).unwrap();
        d.flush(64, 64);
        assert_eq!(d.crash_now(&Survivors::None)[64], 0);
        d.fence().unwrap();
        assert_eq!(d.crash_now(&Survivors::None)[64], 2);
        // A store after the fence is pending again, with its newest content.
        d.write(64, &[3; 1]).unwrap();
        let img = d.crash_now(&Survivors::None);
        assert_eq!((img[64], img[65]), (2, 2));
        let img = d.crash_now(&Survivors::All);
        assert_eq!((img[64], img[65]), (3, 2));
    }

    #[test]
    fn f7_crash_points_replay_state_at_each_fence() {
        let d = CrashDevice::new(4096);
        d.start_recording();
        for v in 1..=3u8 {
            d.write(0, &[v]).unwrap();
            d.persist(0, 1).unwrap();
        }
        assert_eq!(d.crash_points(), 3);
        for p in 0..=3 {
            assert_eq!(d.crash_image(p, &Survivors::None)[0], p as u8);
        }
        assert_eq!(d.crash_image(1, &Survivors::All)[0], 2);
    }

    #[test]
    fn f7_random_survivors_are_deterministic_and_mixed() {
        let d = CrashDevice::new(1 << 16);
        d.write(0, &[9; 1 << 16]).unwrap();
        let a = d.crash_now(&Survivors::Random { seed: 5 });
        let b = d.crash_now(&Survivors::Random { seed: 5 });
        assert_eq!(a, b);
        let kept = a.chunks(64).filter(|c| c[0] == 9).count();
        assert!(kept > 100 && kept < 924, "kept {kept} of 1024");
        assert_eq!(d.pending_lines(0), 1024);
    }
}
