//! One test binary for the crate; modules inside. Ranks are virtual ranks on Flex.
#![cfg(feature = "flex")]

#[path = "ctx_parallel/attention.rs"]
mod attention;
#[path = "ctx_parallel/collectives.rs"]
mod collectives;
#[path = "ctx_parallel/dual_scope.rs"]
mod dual_scope;
#[path = "ctx_parallel/planner.rs"]
mod planner;
