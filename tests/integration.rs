//! Cross-crate integration tests: one binary, modules inside.

#[path = "integration/cli.rs"]
mod cli;
#[path = "integration/layering.rs"]
mod layering;
