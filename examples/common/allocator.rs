//! Keeps freed memory in the process (include with `#[path]`).
//!
//! A training step allocates and frees the same few hundred tensors of 0.1–4 MB each. glibc
//! hands blocks that large back to the kernel on every free (mmap/munmap, heap trimming), so
//! the next step faults every page in again: 7.1 million page faults and 12 s of system time
//! in a 60-step `video_dit train --attention dense` run (training, sampling and measuring),
//! against 0.12 million and 1.6 s with the settings below. Longer sequences allocate blocks
//! past glibc's largest mmap threshold (32 MiB): dense attention's scores at 4096 tokens are
//! 268 MB. Those are mapped and unmapped on every use unless mmap is off: a dense training
//! step at 4096 tokens (`bench_training --frames 32 --steps 2`) ran at 0.076 steps/s with 47 s
//! of system time in 72 s, and at 0.216 steps/s with 7 s of 31 s once blocks of every size
//! came from the heap.

/// Serves every block from the heap and never trims it, so freed tensor memory is reused; the
/// process keeps its peak footprint, as a caching GPU allocator does.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists. A refused setting (return value 0) leaves glibc's default, which is still correct.
    unsafe {
        // mmap off altogether: even at glibc's largest threshold (32 MiB) bigger blocks would
        // still be mapped (a thread arena that cannot grow its heap still maps a block: glibc
        // falls back to mmap there).
        libc::mallopt(libc::M_MMAP_MAX, 0);
        // -1: never trim.
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        // Grow each heap 64 MiB at a time: without this the thread arenas' heaps still grow
        // and shrink page by page (1.9 million faults in a 20-step run instead of 0.13).
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
