//! The user-space MMU: regions of this process's address space that show file
//! ranges, the userfaultfd fault source, address-space primitives, device page
//! references. Knows nothing of files: faults are resolved by the region's
//! [`FaultOwner`] (the DAX layer).

pub(crate) mod engine;
pub(crate) mod pages;
pub(crate) mod region;
pub mod signals;
pub(crate) mod space;
pub(crate) mod uffd;

pub use engine::{engine, forget_parent, try_engine, Engine, VmStats};
pub use region::{FaultOwner, Region, RegionState};
pub use space::{Area, Prot, PAGE};
