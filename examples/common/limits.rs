//! Sizes the examples accept, bounded up front against the memory this machine has, so that a
//! size too large is an error naming the flag, not a shape overflow or an allocation abort
//! deep inside Burn (include with `#[path]`; each example uses what it needs).
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

/// Exits (status 2) naming `flag` when `bytes` (`None`: a size that overflows) is more than
/// the machine's available memory; `what` says what needs it. On a GPU device the host's
/// memory bounds what is staged there too, and the device's own limit applies later.
pub fn check_fits(flag: &str, what: &str, bytes: Option<u64>) {
    const GIB: f64 = (1u64 << 30) as f64;
    let available = available_bytes();
    let refuse = match (bytes, available) {
        (None, _) => Some("more bytes than a 64-bit size holds".to_string()),
        (Some(b), Some(a)) if b > a => Some(format!(
            "about {:.1} GiB, and this machine has {:.1} GiB available",
            b as f64 / GIB,
            a as f64 / GIB
        )),
        _ => None,
    };
    if let Some(why) = refuse {
        eprintln!("error: {flag}: {what} needs {why}");
        std::process::exit(2);
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
