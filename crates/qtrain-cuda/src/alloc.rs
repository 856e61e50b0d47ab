//! The caching device allocator and memory accounting.
//!
//! Ops return fresh tensors (see `qtrain_core::backend`), so a training step allocates and frees
//! the same few sizes thousands of times; `cuMemAlloc`/`cuMemFree` synchronise the device and
//! would serialise everything. Freed blocks therefore go to a cache keyed by their size class and
//! are handed out again without a driver call.
//!
//! Invariant: all device work of a backend runs on its one stream, so a block returned to the
//! cache while a queued kernel still reads it can only be reused by work queued *after* that
//! kernel — stream order makes the reuse safe without events. A second stream would break this.
//!
//! Size classes: requests are rounded up to a multiple of max(512 B, next_pow2(size)/16), so a
//! class wastes at most 12.5% (above 4 KiB) and nearby sizes share blocks. Long-lived tensors
//! (weights, parameters: [`Allocator::alloc_exact`]) skip the classes and take their size rounded
//! to 512 B only — the 129.5 MiB MLP matrices of a 7B model would otherwise take 144 MiB each.
//! On an out-of-memory error the cache is released to the driver and the allocation retried once
//! before a [`CudaError::OutOfMemory`] naming what was being allocated. On any other cache miss
//! while the cache holds more than its limit (an eighth of the device by default), the largest
//! cached blocks are released first until it holds at most half the limit: when sequence lengths
//! vary, blocks of sizes never asked for again do not pile up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::driver::sys::{CUdeviceptr, CUresult};
use cudarc::driver::CudaContext;

use crate::error::{CudaError, Result};

/// Smallest block (and alignment unit of every block) in bytes.
const MIN_BLOCK: usize = 512;

/// The size class a request of `bytes` is served from.
pub fn size_class(bytes: usize) -> usize {
    let bytes = bytes.max(1);
    let granule = (bytes.next_power_of_two() / 16).max(MIN_BLOCK);
    bytes.div_ceil(granule) * granule
}

/// The block a long-lived tensor of `bytes` takes: its size rounded up to [`MIN_BLOCK`].
pub fn exact_class(bytes: usize) -> usize {
    bytes.max(1).div_ceil(MIN_BLOCK) * MIN_BLOCK
}

/// The cached blocks to release, largest first, so that at most `keep` bytes stay cached.
fn blocks_to_release(free: &BTreeMap<usize, Vec<CUdeviceptr>>, cached: usize, keep: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut left = cached;
    for (&size, ptrs) in free.iter().rev() {
        for i in 0..ptrs.len() {
            if left <= keep {
                return out;
            }
            out.push((size, i));
            left -= size;
        }
    }
    out
}

/// Memory counters, all in bytes of size classes (what the device actually holds for us).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Held by live tensors and scratch buffers now.
    pub live: usize,
    /// Free blocks kept in the cache now.
    pub cached: usize,
    /// Highest `live` since the last reset.
    pub peak_live: usize,
    /// Highest `live + cached` (memory taken from the driver) since the last reset.
    pub peak_reserved: usize,
    /// Number of `cuMemAlloc` calls (cache misses) since creation.
    pub driver_allocs: u64,
}

#[derive(Default)]
struct State {
    free: BTreeMap<usize, Vec<CUdeviceptr>>,
    stats: MemoryStats,
    poison: bool,
    /// Cached bytes above which a cache miss trims the cache (`usize::MAX`: never).
    cache_limit: usize,
}

impl State {
    fn note_live(&mut self) {
        let s = &mut self.stats;
        s.peak_live = s.peak_live.max(s.live);
        s.peak_reserved = s.peak_reserved.max(s.live + s.cached);
    }
}

pub struct Allocator {
    ctx: Arc<CudaContext>,
    state: Mutex<State>,
}

/// One device allocation, returned to its allocator's cache on drop.
pub struct DevBuf {
    ptr: CUdeviceptr,
    /// Size class in bytes (≥ the requested size).
    bytes: usize,
    alloc: Arc<Allocator>,
}

impl DevBuf {
    pub fn ptr(&self) -> CUdeviceptr {
        self.ptr
    }

    pub fn class_bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        let mut st = self.alloc.lock();
        st.stats.live -= self.bytes;
        st.stats.cached += self.bytes;
        st.free.entry(self.bytes).or_default().push(self.ptr);
    }
}

impl std::fmt::Debug for DevBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevBuf({:#x}, {} B)", self.ptr, self.bytes)
    }
}

impl Allocator {
    pub fn new(ctx: Arc<CudaContext>) -> Arc<Self> {
        let total = ctx.bind_to_thread().ok().and_then(|_| cudarc::driver::result::mem_get_info().ok()).map(|(_, total)| total);
        let cache_limit = total.map_or(usize::MAX, |t| t / 8);
        Arc::new(Allocator { ctx, state: Mutex::new(State { cache_limit, ..State::default() }) })
    }

    /// Cached bytes above which a cache miss releases the largest cached blocks (`None`: never).
    pub fn set_cache_limit(&self, bytes: Option<usize>) {
        self.lock().cache_limit = bytes.unwrap_or(usize::MAX);
    }

    /// Returns the largest cached blocks to the driver until at most `keep` bytes stay cached.
    pub fn trim_cache(&self, keep: usize) -> Result<()> {
        let blocks: Vec<CUdeviceptr> = {
            let mut st = self.lock();
            let chosen = blocks_to_release(&st.free, st.stats.cached, keep);
            let mut out = Vec::with_capacity(chosen.len());
            for (size, _) in chosen {
                if let Some(p) = st.free.get_mut(&size).and_then(Vec::pop) {
                    st.stats.cached -= size;
                    out.push(p);
                }
            }
            st.free.retain(|_, v| !v.is_empty());
            out
        };
        self.ctx.bind_to_thread()?;
        for p in blocks {
            // SAFETY: each pointer came from cuMemAlloc in `alloc` and sat unused in the cache;
            // cuMemFree waits for queued work that may still touch it.
            unsafe { cudarc::driver::result::free_sync(p) }?;
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only counters behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When on, every allocation (cache hits too) is filled with 0xFF bytes — NaN in f32 and bf16 —
    /// before it is handed out, so tests see any element an op forgot to write.
    pub fn set_poison(&self, on: bool) {
        self.lock().poison = on;
    }

    pub fn poison(&self) -> bool {
        self.lock().poison
    }

    pub fn stats(&self) -> MemoryStats {
        self.lock().stats
    }

    pub fn reset_peak(&self) {
        let mut st = self.lock();
        st.stats.peak_live = st.stats.live;
        st.stats.peak_reserved = st.stats.live + st.stats.cached;
    }

    /// Returns every cached block to the driver.
    pub fn empty_cache(&self) -> Result<()> {
        let blocks: Vec<CUdeviceptr> = {
            let mut st = self.lock();
            st.stats.cached = 0;
            std::mem::take(&mut st.free).into_values().flatten().collect()
        };
        self.ctx.bind_to_thread()?;
        for p in blocks {
            // SAFETY: each pointer came from cuMemAlloc in `alloc` and sat unused in the cache;
            // cuMemFree waits for queued work that may still touch it.
            unsafe { cudarc::driver::result::free_sync(p) }?;
        }
        Ok(())
    }

    /// A block of at least `bytes` bytes from its size class; `what` names it in an
    /// out-of-memory error.
    pub fn alloc(self: &Arc<Self>, bytes: usize, what: &dyn Fn() -> String) -> Result<DevBuf> {
        self.alloc_block(size_class(bytes), bytes, what)
    }

    /// A block of `bytes` rounded up to 512 B only, for tensors that live as long as the model
    /// (weights, trainable parameters, optimizer moments).
    pub fn alloc_exact(self: &Arc<Self>, bytes: usize, what: &dyn Fn() -> String) -> Result<DevBuf> {
        self.alloc_block(exact_class(bytes), bytes, what)
    }

    fn alloc_block(self: &Arc<Self>, class: usize, bytes: usize, what: &dyn Fn() -> String) -> Result<DevBuf> {
        self.ctx.bind_to_thread()?;
        let cached = {
            let mut st = self.lock();
            let hit = st.free.get_mut(&class).and_then(Vec::pop);
            if hit.is_some() {
                st.stats.cached -= class;
                st.stats.live += class;
                st.note_live();
            }
            hit
        };
        let ptr = match cached {
            Some(p) => p,
            None => {
                let (cached, limit) = {
                    let st = self.lock();
                    (st.stats.cached, st.cache_limit)
                };
                if cached > limit {
                    self.trim_cache(limit / 2)?;
                }
                self.driver_alloc(class, bytes, what)?
            }
        };
        let buf = DevBuf { ptr, bytes: class, alloc: self.clone() };
        if self.poison() {
            // SAFETY: `ptr` is a live allocation of `class` bytes owned by `buf`.
            unsafe { cudarc::driver::result::memset_d8_sync(ptr, 0xFF, class) }?;
        }
        Ok(buf)
    }

    fn driver_alloc(&self, class: usize, requested: usize, what: &dyn Fn() -> String) -> Result<CUdeviceptr> {
        // SAFETY: plain device allocation on the current context; the memory is uninitialised and
        // only ever reached through the returned DevBuf.
        let first = unsafe { cudarc::driver::result::malloc_sync(class) };
        let ptr = match first {
            Ok(p) => p,
            Err(e) if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                self.empty_cache()?;
                // SAFETY: as above.
                match unsafe { cudarc::driver::result::malloc_sync(class) } {
                    Ok(p) => p,
                    Err(e) if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                        let (free_bytes, total_bytes) = cudarc::driver::result::mem_get_info().unwrap_or((0, 0));
                        return Err(CudaError::OutOfMemory {
                            what: what(),
                            bytes: requested,
                            live_bytes: self.stats().live,
                            free_bytes,
                            total_bytes,
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let mut st = self.lock();
        st.stats.live += class;
        st.stats.driver_allocs += 1;
        st.note_live();
        Ok(ptr)
    }
}

impl Drop for Allocator {
    fn drop(&mut self) {
        // Every DevBuf holds an Arc to this allocator, so all blocks are in the cache by now.
        let _ = self.empty_cache();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_round_up_by_at_most_an_eighth() {
        assert_eq!(size_class(0), 512);
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(512), 512);
        assert_eq!(size_class(513), 1024);
        assert_eq!(size_class(4096), 4096);
        assert_eq!(size_class(4097), 4608);
        for bytes in [1000usize, 12_345, 1 << 20, 3 << 20, (1 << 20) + 1, 2048 * 3584 * 4, 2048 * 18944 * 4 + 7, 152_064 * 3584 * 2] {
            let c = size_class(bytes);
            assert!(c >= bytes && c.is_multiple_of(512), "{bytes} -> {c}");
            assert!(c <= bytes + bytes / 8 + 512, "{bytes} -> {c} wastes too much");
            assert_eq!(size_class(c), c, "a class is its own class");
        }
    }

    #[test]
    fn weights_take_their_exact_size() {
        // Qwen2.5-7B's MLP matrix in bf16: 129.5 MiB, which its size class would round to 144 MiB.
        let mlp = 18944 * 3584 * 2;
        assert_eq!(size_class(mlp), 144 << 20);
        assert_eq!(exact_class(mlp), mlp);
        assert_eq!(exact_class(1), 512);
        assert_eq!(exact_class(1000), 1024);
    }

    #[test]
    fn trimming_releases_the_largest_blocks_first() {
        let mut free = BTreeMap::new();
        free.insert(512usize, vec![1, 2]);
        free.insert(4096, vec![3]);
        free.insert(1 << 20, vec![4, 5]);
        let cached = 2 * 512 + 4096 + 2 * (1 << 20);
        assert_eq!(blocks_to_release(&free, cached, cached), vec![]);
        assert_eq!(blocks_to_release(&free, cached, (1 << 20) + 4096 + 1024), vec![(1 << 20, 0)]);
        assert_eq!(blocks_to_release(&free, cached, 600), vec![(1 << 20, 0), (1 << 20, 1), (4096, 0), (512, 0)]);
        assert_eq!(blocks_to_release(&free, cached, 0).len(), 5);
    }
}
