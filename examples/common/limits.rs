//! Sizes the examples accept, bounded up front against the memory this machine has, so that a
//! size too large is an error naming the flag, not a shape overflow or an allocation abort
//! deep inside Burn (include with `#[path]`, beside `fail.rs`; each example uses what it
//! needs).
#![allow(dead_code)]

/// Bytes this machine can still allocate (Linux `MemAvailable`), or `None` where unknown.
fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The product of `factors` in bytes, `None` when it overflows.
pub fn bytes_of(factors: &[usize]) -> Option<u64> {
    factors
        .iter()
        .try_fold(1u64, |acc, &f| acc.checked_mul(u64::try_from(f).ok()?))
}

fn refuse(flag: &str, what: &str, why: &str) -> ! {
    super::fail::fail(format!("{flag}: {what} needs {why}"))
}

/// `bytes`, or an exit (status 2) naming `flag` when it overflowed (`None`); `what` says what
/// needs them. For sizes that need not fit this machine (an MPI job's ranks may each have one).
pub fn check_size(flag: &str, what: &str, bytes: Option<u64>) -> u64 {
    bytes.unwrap_or_else(|| refuse(flag, what, "more bytes than a 64-bit size holds"))
}

/// [`check_size`], and an exit naming `flag` when the bytes are more than the machine's
/// available memory. On a GPU device the host's memory bounds what is staged there too, and
/// the device's own limit applies later.
pub fn check_fits(flag: &str, what: &str, bytes: Option<u64>) {
    const GIB: f64 = (1u64 << 30) as f64;
    let bytes = check_size(flag, what, bytes);
    if let Some(available) = available_bytes().filter(|&a| bytes > a) {
        let why = format!(
            "about {:.1} GiB, and this machine has {:.1} GiB available",
            bytes as f64 / GIB,
            available as f64 / GIB
        );
        refuse(flag, what, &why);
    }
}

/// A lower bound on what one clip of `frames × size × size` pixels costs the tiny DiT (patches
/// 2×4×4, width 128): sixteen f32 activations of the width per token, for one block.
pub fn tiny_dit_clip_bytes(frames: usize, size: usize) -> Option<u64> {
    bytes_of(&[
        frames.div_ceil(2),
        size.div_ceil(4),
        size.div_ceil(4),
        16 * 128 * 4,
    ])
}
