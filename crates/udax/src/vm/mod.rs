//! The user-space MMU: regions of this process's address space that show file
//! ranges, the userfaultfd fault source, address-space primitives, device page
//! references. Knows nothing of files: faults are resolved by the region's
//! [`FaultOwner`] (the DAX layer).

pub mod engine;
pub mod pages;
pub mod region;
pub mod signals;
pub mod space;
pub mod uffd;

pub use engine::{engine, try_engine, Engine, VmStats};
pub use region::{FaultOwner, Region, RegionState};
pub use space::{Prot, PAGE};
