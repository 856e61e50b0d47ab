//! [`CudaBackend`]: the context, the one stream, the allocator, cuBLASLt and the kernel cache,
//! plus the small helpers every launcher uses (allocation, casts, uploads, launches).
//! The `qtrain_core::Backend` implementation itself is in `backend_impl.rs`; the launchers are
//! in `ops/`, one module per `kernels/*.cu`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, LaunchArgs, LaunchConfig};
use qtrain_core::DType;

use crate::alloc::{Allocator, DevBuf, MemoryStats};
use crate::error::{CudaError, Result};
use crate::gemm::{Gemm, GemmArgs};
use crate::profile::{OpKind, Profiler};
use crate::registry::{self, Kernel};
use crate::tensor::CudaTensor;

/// cuBLASLt workspace: NVIDIA recommends 32 MiB on Hopper (4 MiB before).
const LT_WORKSPACE_BYTES: usize = 32 << 20;

/// The CUDA implementation of [`qtrain_core::Backend`] on one device.
///
/// All device work is queued on the context's legacy default stream, in call order; host reads
/// (`download`, `sum_squares`, the loss of `lm_head_cross_entropy`) wait for it. Set
/// `QTRAIN_CUDA_SYNC=1` to synchronise after every kernel launch and every cuBLASLt call, so an
/// asynchronous fault is reported with the kernel or GEMM that caused it.
pub struct CudaBackend {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) alloc: Arc<Allocator>,
    pub(crate) gemm: Gemm,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    compute_capability: (i32, i32),
    device_name: String,
    libraries: crate::device::LibraryReport,
    sync_launches: bool,
    /// Rows per LM-head chunk when set (tests force small chunks); otherwise derived from
    /// [`crate::ops::cross_entropy::CE_LOGITS_BYTES`].
    pub(crate) ce_chunk_rows: Mutex<Option<usize>>,
    /// Byte budget of one attention chunk's score matrices when set (tests force chunking);
    /// otherwise [`crate::ops::attention::ATTN_SCORE_BYTES`].
    pub(crate) attn_score_bytes: Mutex<Option<usize>>,
    /// CUDA-event timelines while profiling is on (`Backend::set_profiling`).
    profiler: Mutex<Option<Profiler>>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBackend({})", self.describe())
    }
}

impl CudaBackend {
    /// Opens device `ordinal`. Fails with a typed error (never a panic) when the driver, NVRTC or
    /// cuBLASLt library is missing or the device does not exist.
    pub fn new(ordinal: usize) -> Result<CudaBackend> {
        crate::device::check_libraries()?;
        cudarc::driver::result::init()?;
        let libraries = crate::device::library_report()?;
        crate::device::check_library_versions(&libraries)?;
        let count = cudarc::driver::result::device::get_count()?;
        if ordinal as i64 >= count as i64 {
            return Err(CudaError::NoDevice { ordinal, detail: format!("the driver reports {count} device(s)") });
        }
        let ctx = CudaContext::new(ordinal)?;
        let stream = ctx.default_stream();
        let major = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let device_name = ctx.name()?;
        let alloc = Allocator::new(ctx.clone());
        let workspace = alloc.alloc(LT_WORKSPACE_BYTES, &|| "cuBLASLt workspace".to_string())?;
        let gemm = Gemm::new(workspace, LT_WORKSPACE_BYTES)?;
        Ok(CudaBackend {
            ctx,
            stream,
            alloc,
            gemm,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            compute_capability: (major, minor),
            device_name,
            libraries,
            sync_launches: std::env::var("QTRAIN_CUDA_SYNC").is_ok_and(|v| v == "1"),
            ce_chunk_rows: Mutex::new(None),
            attn_score_bytes: Mutex::new(None),
            profiler: Mutex::new(None),
        })
    }

    /// "cuda:0 (NVIDIA H100 80GB HBM3, sm_90)".
    pub fn describe(&self) -> String {
        format!("cuda:{} ({}, sm_{}{})", self.ctx.ordinal(), self.device_name, self.compute_capability.0, self.compute_capability.1)
    }

    /// Versions and files of the CUDA libraries in use (logged by `qtrain` at start-up).
    pub fn libraries(&self) -> &crate::device::LibraryReport {
        &self.libraries
    }

    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// Peak device memory this backend has held (live tensors + allocator cache + cuBLASLt
    /// workspace) since creation or [`CudaBackend::reset_peak`], in bytes. This is the number to
    /// compare with the GPU's capacity (torch's `max_memory_reserved`).
    pub fn peak_bytes(&self) -> usize {
        self.alloc.stats().peak_reserved
    }

    /// Peak bytes held by live tensors and scratch buffers alone (torch's `max_memory_allocated`).
    pub fn peak_live_bytes(&self) -> usize {
        self.alloc.stats().peak_live
    }

    pub fn memory_stats(&self) -> MemoryStats {
        self.alloc.stats()
    }

    /// Restarts peak tracking from the current usage.
    pub fn reset_peak(&self) {
        self.alloc.reset_peak()
    }

    /// Returns the allocator's cached free blocks to the driver.
    pub fn empty_cache(&self) -> Result<()> {
        self.synchronize()?;
        self.alloc.empty_cache()
    }

    /// Returns the largest cached free blocks to the driver until at most `keep_bytes` stay cached.
    pub fn trim_cache(&self, keep_bytes: usize) -> Result<()> {
        self.alloc.trim_cache(keep_bytes)
    }

    /// Cached bytes above which an allocation that misses the cache first trims it to half this
    /// (`None`: never; the default is an eighth of the device's memory).
    pub fn set_cache_limit(&self, bytes: Option<usize>) {
        self.alloc.set_cache_limit(bytes)
    }

    /// Fill every new allocation with NaN bytes (tests: catches outputs an op never writes).
    pub fn set_poison_allocations(&self, on: bool) {
        self.alloc.set_poison(on)
    }

    /// Forces the LM head + loss to work in chunks of `rows` rows (`None`: the default budget).
    pub fn set_lm_head_chunk_rows(&self, rows: Option<usize>) {
        *self.ce_chunk_rows.lock().unwrap_or_else(|e| e.into_inner()) = rows;
    }

    /// Caps the f32 score matrices of one attention chunk at `bytes` (`None`: the default budget).
    pub fn set_attention_score_budget(&self, bytes: Option<usize>) {
        *self.attn_score_bytes.lock().unwrap_or_else(|e| e.into_inner()) = bytes;
    }

    pub(crate) fn attention_budget(&self) -> usize {
        self.attn_score_bytes.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or(crate::ops::attention::ATTN_SCORE_BYTES)
    }

    /// Starts (discarding any open one) or stops device-side timing of phases and op kinds.
    pub fn set_profiler(&self, on: bool) {
        *self.profiler.lock().unwrap_or_else(|e| e.into_inner()) = on.then(Profiler::default);
    }

    /// Marks the start of an op of `kind` while profiling (nothing otherwise).
    pub(crate) fn op_mark(&self, kind: OpKind) -> Result<()> {
        match self.profiler.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(p) => p.op(&self.ctx, &self.stream, kind),
            None => Ok(()),
        }
    }

    /// Marks the start of a phase of the step while profiling (nothing otherwise).
    pub(crate) fn phase_mark(&self, name: &'static str) -> Result<()> {
        match self.profiler.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(p) => p.phase(&self.ctx, &self.stream, name),
            None => Ok(()),
        }
    }

    /// Waits for the profiled work and returns its totals, profiling on from scratch again;
    /// `None` when profiling is off.
    pub fn finish_profile(&self) -> Result<Option<qtrain_core::Profile>> {
        let mut guard = self.profiler.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = guard.take() else { return Ok(None) };
        *guard = Some(Profiler::default());
        Ok(Some(p.finish(&self.ctx, &self.stream)?))
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.ctx.bind_to_thread()?;
        self.stream.synchronize()?;
        Ok(())
    }

    /// Compiles and loads every kernel module now (otherwise each is compiled at its first use),
    /// returning per module the error, if any.
    pub fn compile_all_kernels(&self) -> Vec<(&'static str, Result<()>)> {
        registry::MODULES.iter().map(|m| (m.name, self.module(m.name).map(|_| ()))).collect()
    }

    fn module(&self, name: &'static str) -> Result<Arc<CudaModule>> {
        let mut mods = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = mods.get(name) {
            return Ok(m.clone());
        }
        let module = registry::module(name).ok_or(CudaError::Unsupported { op: "kernel registry", detail: format!("no module {name}") })?;
        let ptx = registry::compile_ptx(module, self.compute_capability)?;
        self.ctx.bind_to_thread()?;
        let m = self.ctx.load_module(cudarc::nvrtc::Ptx::from_src(ptx))?;
        mods.insert(name, m.clone());
        Ok(m)
    }

    pub(crate) fn func(&self, k: Kernel) -> Result<CudaFunction> {
        if let Some(f) = self.functions.lock().unwrap_or_else(|e| e.into_inner()).get(k.name) {
            return Ok(f.clone());
        }
        let f = self.module(k.module)?.load_function(k.name)?;
        self.functions.lock().unwrap_or_else(|e| e.into_inner()).insert(k.name, f.clone());
        Ok(f)
    }

    /// Launches a kernel whose arguments were pushed onto `args`.
    ///
    /// # Safety
    /// The pushed arguments must match the kernel's parameter list (types and order, pointers as
    /// `u64`), and every buffer must hold what the kernel indexes for the sizes passed.
    pub(crate) unsafe fn launch(&self, k: Kernel, mut args: LaunchArgs<'_>, cfg: LaunchConfig) -> Result<()> {
        if cfg.grid_dim.0 == 0 || cfg.grid_dim.1 == 0 || cfg.grid_dim.2 == 0 {
            return Ok(());
        }
        // SAFETY: forwarded to the caller (see above).
        unsafe { args.launch(cfg) }.map_err(|source| CudaError::Launch { kernel: k.name, source })?;
        if self.sync_launches {
            self.stream.synchronize().map_err(|source| CudaError::Launch { kernel: k.name, source })?;
        }
        Ok(())
    }

    /// Runs a cuBLASLt GEMM on the backend's stream (and, with `QTRAIN_CUDA_SYNC=1`, waits for
    /// it, so a fault inside cuBLASLt is reported as the GEMM's and not the next kernel's).
    pub(crate) fn gemm(&self, g: &GemmArgs) -> Result<()> {
        self.ctx.bind_to_thread()?;
        self.gemm.run(self.stream.cu_stream(), g)?;
        if self.sync_launches {
            self.stream.synchronize().map_err(|source| CudaError::Launch { kernel: "cuBLASLt matmul", source })?;
        }
        Ok(())
    }

    /// An uninitialised buffer of `numel` elements of `dtype`.
    pub(crate) fn alloc_buf(&self, numel: usize, dtype: DType, what: &dyn Fn() -> String) -> Result<DevBuf> {
        self.alloc.alloc(numel * dtype.size_in_bytes(), what)
    }

    /// An uninitialised tensor; `what` names it in an out-of-memory error.
    pub(crate) fn empty(&self, shape: &[usize], dtype: DType, what: &str) -> Result<CudaTensor> {
        let numel = shape.iter().product();
        let buf = self.alloc_buf(numel, dtype, &|| format!("{what} {shape:?} {}", dtype.hf_name()))?;
        Ok(CudaTensor { shape: shape.to_vec(), dtype, buf })
    }

    /// A zero-filled f32 tensor.
    pub(crate) fn zeros_f32(&self, shape: &[usize], what: &str) -> Result<CudaTensor> {
        let t = self.empty(shape, DType::F32, what)?;
        self.memset_zero(&t.buf, t.size_in_bytes())?;
        Ok(t)
    }

    pub(crate) fn memset_zero(&self, buf: &DevBuf, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.ctx.bind_to_thread()?;
        // SAFETY: `buf` holds at least `bytes` bytes (its size class); queued on our stream.
        unsafe { cudarc::driver::result::memset_d8_async(buf.ptr(), 0, bytes, self.stream.cu_stream()) }?;
        Ok(())
    }

    /// Copies a host slice into a fresh device buffer (indices, masks, tables).
    pub(crate) fn upload_slice<T: Copy>(&self, data: &[T], what: &str) -> Result<DevBuf> {
        self.upload_slice_sized(data, what, false)
    }

    /// [`CudaBackend::upload_slice`] into a block of the data's exact size (tensors that stay:
    /// weights and parameters; see [`Allocator::alloc_exact`]) or of its size class.
    pub(crate) fn upload_slice_sized<T: Copy>(&self, data: &[T], what: &str, exact: bool) -> Result<DevBuf> {
        let bytes = std::mem::size_of_val(data);
        let name = || format!("{what} ({} elements)", data.len());
        let buf = if exact { self.alloc.alloc_exact(bytes, &name)? } else { self.alloc.alloc(bytes, &name)? };
        if bytes > 0 {
            // SAFETY: `buf` holds at least `bytes`; the synchronous copy reads `data` before
            // returning and is ordered with our (legacy default) stream.
            unsafe { cudarc::driver::result::memcpy_htod_sync(buf.ptr(), data) }?;
        }
        Ok(buf)
    }

    /// Copies `len` elements of type `T` from the device into a new host vector.
    pub(crate) fn download_slice<T: Copy + Default>(&self, ptr: u64, len: usize) -> Result<Vec<T>> {
        let mut out = vec![T::default(); len];
        if len > 0 {
            self.ctx.bind_to_thread()?;
            // SAFETY: the caller passes a device buffer holding `len` elements of `T`; the
            // synchronous copy waits for the queued work that writes it (same legacy stream).
            unsafe { cudarc::driver::result::memcpy_dtoh_sync(&mut out, ptr) }?;
        }
        Ok(out)
    }

    /// `t` as f32: itself, or a converted copy when it is stored as bf16.
    pub(crate) fn as_f32<'a>(&self, t: &'a CudaTensor) -> Result<Converted<'a>> {
        if t.is_f32() {
            return Ok(Converted::Borrowed(t));
        }
        let out = self.empty(&t.shape, DType::F32, "bf16→f32 copy")?;
        crate::ops::copy::cast(self, t, &out)?;
        Ok(Converted::Owned(out))
    }

    /// `t` as bf16: itself, or a rounded copy when it is stored as f32 (GEMM operands).
    pub(crate) fn as_bf16<'a>(&self, t: &'a CudaTensor) -> Result<Converted<'a>> {
        if t.dtype == DType::BF16 {
            return Ok(Converted::Borrowed(t));
        }
        let out = self.empty(&t.shape, DType::BF16, "f32→bf16 GEMM operand")?;
        crate::ops::copy::cast(self, t, &out)?;
        Ok(Converted::Owned(out))
    }

    /// The two operands of a GEMM in one element type: both as they are when the types agree,
    /// otherwise the f32 one rounded to bf16 (the bf16 one is a weight, too large to widen).
    pub(crate) fn gemm_pair<'a>(&self, a: &'a CudaTensor, b: &'a CudaTensor) -> Result<(Converted<'a>, Converted<'a>)> {
        if a.dtype == b.dtype {
            Ok((Converted::Borrowed(a), Converted::Borrowed(b)))
        } else {
            Ok((self.as_bf16(a)?, self.as_bf16(b)?))
        }
    }
}

/// A tensor either borrowed as it is or converted into a temporary (see [`CudaBackend::as_f32`]).
pub(crate) enum Converted<'a> {
    Borrowed(&'a CudaTensor),
    Owned(CudaTensor),
}

impl std::ops::Deref for Converted<'_> {
    type Target = CudaTensor;
    fn deref(&self) -> &CudaTensor {
        match self {
            Converted::Borrowed(t) => t,
            Converted::Owned(t) => t,
        }
    }
}
