//! Checkpoints of the live job (DESIGN.md §7, "Checkpoints and recovery").
//! [`store`] keeps them behind a URL: versioned, checksummed parts made
//! complete by a manifest written last. Taking checkpoints in `run` and
//! recovering from them is not built yet: the job config's `[checkpoint]`
//! section is read but the job writes nothing.

pub mod state;
pub mod store;
