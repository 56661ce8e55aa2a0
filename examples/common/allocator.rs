//! Keeps freed memory in the process (include with `#[path]`).
//!
//! A training step allocates and frees the same few hundred tensors of 0.1–4 MB each. glibc
//! hands blocks that large back to the kernel on every free (mmap/munmap, heap trimming), so
//! the next step faults every page in again: 7.1 million page faults and 12 s of system time
//! in a 60-step `video_dit train --attention dense` run (training, sampling and measuring),
//! against 0.12 million and 1.6 s with the settings below.

/// Serves large blocks from the heap and trims it only past 1 GiB free, so freed tensor
/// memory is reused.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists. A refused setting (return value 0) leaves glibc's default, which is still correct.
    unsafe {
        // 32 MiB is the largest mmap threshold glibc accepts on 64-bit targets.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        // Grow each heap 64 MiB at a time: without this the thread arenas' heaps still grow
        // and shrink page by page (1.9 million faults in a 20-step run instead of 0.13).
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
