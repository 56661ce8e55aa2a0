//! One test binary for the crate; modules inside. Ranks are threads (and, with the `mpi`
//! feature, processes under `mpirun`) on Flex.
#![cfg(feature = "flex")]

#[path = "ctx_parallel/dual_scope.rs"]
mod dual_scope;
#[path = "ctx_parallel/in_process.rs"]
mod in_process;
#[cfg(feature = "mpi")]
#[path = "ctx_parallel/mpi.rs"]
mod mpi;
#[path = "ctx_parallel/planner.rs"]
mod planner;
#[path = "ctx_parallel/spmd_cases.rs"]
mod spmd_cases;
