//! Keeping the agent's resident memory close to what it uses (glibc's malloc; elsewhere these
//! do nothing).
//!
//! Two things made an agent's RSS much larger than its live heap (measured with
//! `examples/memory_bench.rs` and dhat: 44 MiB live against 223 MiB resident at 20,000 pods):
//!
//! * glibc gives each thread that allocates concurrently an arena of its own, up to 8 per
//!   core, and never gives an arena back. The applies and resyncs run on tokio's blocking
//!   threads, so the first full resync (on another thread than the first apply) built a
//!   second copy's worth of arenas: RSS grew by a fifth to a half after it. [`limit_arenas`]
//!   caps them at two.
//! * A full render and the initial list allocate tens of MiB for a moment; freed, that memory
//!   stays in the arenas. [`release_free_memory`] hands the free pages back after such a
//!   peak (`malloc_trim`, a few milliseconds, only after full applies and resyncs).

/// Caps malloc's arenas at two for the whole process, and keeps blocks of 128 KiB and more
/// in their own mappings. Call early (before the runtime starts its threads is best; later
/// calls still cap the arenas made afterwards).
///
/// glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB), so
/// after the first list and full render their big temporary tables and buffers were carved
/// from the arenas, between long-lived blocks; a fixed threshold sends them back to the
/// kernel when freed (memory_bench: 3–10 MiB less at 10,000 and 20,000 pods).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc tunables; M_ARENA_MAX takes any positive value,
    // M_MMAP_THRESHOLD any value up to 32 MiB.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Returns the free memory of every arena to the kernel.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}
