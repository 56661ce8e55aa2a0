//! Cross-crate integration tests: one binary, modules inside.

#[path = "integration/layering.rs"]
mod layering;
