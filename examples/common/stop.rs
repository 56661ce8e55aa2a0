//! A polite stop (SIGTERM, SIGINT) noted for a training loop to act on between steps: it saves
//! a checkpoint and ends, where the default would kill the process mid-step (include with
//! `#[path]`). A second signal ends the process at once.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked for a stop (0: none yet).
static ASKED: AtomicI32 = AtomicI32::new(0);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn note(signal: libc::c_int) {
    // Only async-signal-safe calls here: an atomic swap and `_exit`.
    if ASKED.swap(signal, Ordering::SeqCst) != 0 {
        // SAFETY: `_exit` is async-signal-safe.
        unsafe { libc::_exit(128 + signal) };
    }
}

/// From now on SIGTERM and SIGINT are noted instead of ending the process (on Linux with
/// glibc, the examples' `libc` target; elsewhere they end it as before).
pub fn catch_polite_stops() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    catch_with_libc();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn catch_with_libc() {
    let handler = note as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: `note` only touches an atomic and calls `_exit`, both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

/// The signal that asked for a stop, if one did: its name and the exit status it calls for
/// (128 + its number).
pub fn requested() -> Option<(&'static str, i32)> {
    // Linux's numbers (SIGINT 2, SIGTERM 15).
    match ASKED.load(Ordering::SeqCst) {
        0 => None,
        15 => Some(("SIGTERM", 143)),
        _ => Some(("SIGINT", 130)),
    }
}
