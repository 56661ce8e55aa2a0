use alloc::string::{String, ToString};
use core::fmt;

/// A rejected argument: which function, which argument, what was expected and what came.
///
/// Every public entry point of the workspace validates its inputs before any kernel runs and
/// returns this error instead of panicking deep inside a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparseAttnError {
    /// The function that rejected the call.
    pub function: &'static str,
    /// The offending argument.
    pub argument: &'static str,
    /// What the argument must be.
    pub expected: String,
    /// What it was.
    pub actual: String,
}

impl SparseAttnError {
    pub(crate) fn new(
        function: &'static str,
        argument: &'static str,
        expected: impl ToString,
        actual: impl ToString,
    ) -> Self {
        Self {
            function,
            argument,
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }
}

impl fmt::Display for SparseAttnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: `{}` must be {}, got {}",
            self.function, self.argument, self.expected, self.actual
        )
    }
}

impl core::error::Error for SparseAttnError {}

impl SparseAttnError {
    /// `Ok(())` when `ok`, else the error naming `argument` of `function`. Lets crates built
    /// on this one report bad input the same way.
    pub fn check(
        ok: bool,
        function: &'static str,
        argument: &'static str,
        expected: impl ToString,
        actual: impl ToString,
    ) -> Result<(), Self> {
        if ok {
            Ok(())
        } else {
            Err(Self::new(function, argument, expected, actual))
        }
    }
}
