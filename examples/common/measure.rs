//! Timing and peak heap memory for the bench examples (include with `#[path]`): this module
//! installs a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::tensor::Device;

/// Counts live heap bytes and their peak, so CPU runs can report peak memory.
struct CountingAlloc;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static BASE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Runs `f` `repeats` times after one warm-up; returns the median seconds and the peak
/// heap growth in bytes over the live set at the start. What `f` returns stays alive until
/// the device has synced: a lazy backend (Fusion) may skip work whose result is dropped.
pub fn measure<T>(device: &Device, repeats: usize, mut f: impl FnMut() -> T) -> (f64, usize) {
    let kept = f();
    device.sync().expect("device sync");
    drop(kept);
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        let kept = f();
        device.sync().expect("device sync");
        times.push(start.elapsed().as_secs_f64());
        drop(kept);
    }
    times.sort_by(f64::total_cmp);
    (
        times[times.len() / 2],
        PEAK.load(Ordering::Relaxed).saturating_sub(base),
    )
}

/// Starts a new peak: the live heap now.
#[allow(dead_code)]
pub fn reset_peak() {
    let live = LIVE.load(Ordering::Relaxed);
    BASE.store(live, Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
}

/// Peak heap growth over the live heap at the last [`reset_peak`].
#[allow(dead_code)]
pub fn peak_since() -> usize {
    PEAK.load(Ordering::Relaxed)
        .saturating_sub(BASE.load(Ordering::Relaxed))
}
