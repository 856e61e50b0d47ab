//! glibc malloc settings for a process whose working set is a few large buffers allocated and
//! freed once per op (activations, logits chunks, packing buffers). By default glibc serves
//! blocks above its mmap threshold (at most 32 MiB) with fresh `mmap`s and returns freed heap
//! tops to the kernel, so every LM-head chunk (155 MB at Qwen's 152k vocabulary) is faulted in
//! and zeroed page by page again: 7 % of a Qwen2.5-0.5B bf16 LoRA step in page faults and
//! kernel `clear_page`. Keeping large blocks in the heap and never trimming it made that step
//! 5 % faster (129.5 → 135.6 tokens/s) for 0.04 GiB more peak RSS. Those thresholds only govern
//! the main arena: the CPU backend runs its work on rayon's worker threads (`CpuBackend::run`),
//! whose allocations go to per-thread arenas of at most 64 MiB each, and a larger block there is
//! still a fresh `mmap` (clear_page was still 8 % of the step). One arena for all threads keeps
//! every block in the one heap: the Qwen2.5-0.5B step went 244–256 → 266–267 tokens/s
//! (`MALLOC_ARENA_MAX=1`, alternated, Zen 5 machine), same peak RSS. The threads' small blocks
//! stay in glibc's per-thread caches, so they rarely meet on the arena's lock. Must not change
//! anything but these three settings; a no-op where the C library is not glibc.
//!
//! The global allocator is the system one wrapped in chat-template rendering's heap budget
//! ([`qtrain_data::BudgetedAllocator`]: a hostile template that doubles a string in a loop
//! ends with one error line instead of an abort inside malloc).

#[global_allocator]
static ALLOCATOR: qtrain_data::BudgetedAllocator = qtrain_data::BudgetedAllocator;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_large_blocks() {
    // glibc's `mallopt` parameters (malloc.h).
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    const M_ARENA_MAX: i32 = -8;
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    // SAFETY: mallopt only changes allocator thresholds; called before any thread starts.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 1 << 30);
        mallopt(M_TRIM_THRESHOLD, i32::MAX);
        mallopt(M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_large_blocks() {}
