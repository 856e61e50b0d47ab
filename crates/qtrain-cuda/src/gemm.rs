//! A thin cuBLASLt wrapper for row-major GEMMs with mixed types, over cudarc's
//! `cublaslt::result`/`sys` layer (cudarc's safe `Matmul` wants one element type for A, B and C,
//! while we need bf16 × bf16 → f32).
//!
//! `C[m, n] = alpha · op(A) · op(B) + beta · C`, all row-major, optionally strided-batched:
//! - A and B both bf16 (f32 accumulate, `CUBLAS_COMPUTE_32F`) or both f32 (true f32 math, no TF32);
//! - C is always f32; `beta = 1` accumulates into it (gradient buffers), `beta = 0` never reads it.
//!
//! cuBLASLt is column-major. A row-major matrix X with row stride `ld` is the column-major matrix
//! Xᵀ with the same `ld`, so the row-major product C = op(A)·op(B) is computed as the
//! column-major product Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLASLt's "A" is our B and its "B" is our A, with
//! the same transpose flags ([`to_column_major`], tested against plain loops on the host).
//!
//! Algorithm selection: the heuristic's first choice per problem (shape, types, transposes,
//! strides, pointer alignments) is cached for the life of the backend.

use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::size_of;
use std::sync::Mutex;

use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys;

use crate::alloc::DevBuf;
use crate::error::{CudaError, Result};

/// Element type of a GEMM operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElemType {
    F32,
    BF16,
}

impl ElemType {
    fn cuda(self) -> sys::cudaDataType {
        match self {
            ElemType::F32 => sys::cudaDataType::CUDA_R_32F,
            ElemType::BF16 => sys::cudaDataType::CUDA_R_16BF,
        }
    }

    pub fn size(self) -> usize {
        match self {
            ElemType::F32 => 4,
            ElemType::BF16 => 2,
        }
    }
}

/// A row-major matrix operand as stored: `rows × cols`, `ld` elements between rows (`≥ cols`),
/// `batch_stride` elements between the matrices of a batch (0 repeats one matrix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatRef {
    pub ptr: u64,
    pub ty: ElemType,
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
    pub batch_stride: usize,
}

impl MatRef {
    /// A dense `rows × cols` matrix at `ptr`.
    pub fn dense(ptr: u64, ty: ElemType, rows: usize, cols: usize) -> Self {
        MatRef { ptr, ty, rows, cols, ld: cols, batch_stride: rows * cols }
    }

    /// The same matrix with another row stride.
    pub fn with_ld(self, ld: usize) -> Self {
        MatRef { ld, ..self }
    }

    /// The same matrix with another batch stride.
    pub fn with_batch_stride(self, batch_stride: usize) -> Self {
        MatRef { batch_stride, ..self }
    }
}

/// One (strided-batched) row-major GEMM: `C = alpha · op(A) · op(B) + beta · C`.
#[derive(Clone, Copy, Debug)]
pub struct GemmArgs {
    pub a: MatRef,
    pub trans_a: bool,
    pub b: MatRef,
    pub trans_b: bool,
    /// f32, `m × n`.
    pub c: MatRef,
    pub batch: usize,
    pub alpha: f32,
    pub beta: f32,
}

/// A column-major matrix layout as cuBLASLt describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayoutDesc {
    pub ty: ElemType,
    pub rows: u64,
    pub cols: u64,
    pub ld: i64,
    pub batch_stride: i64,
}

/// The column-major problem handed to cuBLASLt: `D = op(A)·op(B)` of `m × k` by `k × n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LtProblem {
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub trans_a: bool,
    pub trans_b: bool,
    pub a: LayoutDesc,
    pub b: LayoutDesc,
    pub c: LayoutDesc,
    pub batch: i32,
}

fn col_major_of_row_major(x: &MatRef) -> LayoutDesc {
    LayoutDesc { ty: x.ty, rows: x.cols as u64, cols: x.rows as u64, ld: x.ld as i64, batch_stride: x.batch_stride as i64 }
}

/// Checks the shapes of a row-major GEMM and returns (m, n, k) of `op(A)·op(B)`.
pub fn gemm_dims(g: &GemmArgs) -> Result<(usize, usize, usize)> {
    let (m, k) = if g.trans_a { (g.a.cols, g.a.rows) } else { (g.a.rows, g.a.cols) };
    let (k2, n) = if g.trans_b { (g.b.cols, g.b.rows) } else { (g.b.rows, g.b.cols) };
    let bad = |detail: String| Err(CudaError::Unsupported { op: "gemm", detail });
    if k != k2 || g.c.rows != m || g.c.cols != n {
        return bad(format!("op(A) {m}×{k}, op(B) {k2}×{n}, C {}×{}", g.c.rows, g.c.cols));
    }
    if g.a.ty != g.b.ty {
        return bad(format!("A is {:?} but B is {:?} (convert one first)", g.a.ty, g.b.ty));
    }
    if g.c.ty != ElemType::F32 {
        return bad("C must be f32".into());
    }
    for (name, x) in [("A", &g.a), ("B", &g.b), ("C", &g.c)] {
        if x.ld < x.cols.max(1) {
            return bad(format!("{name}: row stride {} below its {} columns", x.ld, x.cols));
        }
    }
    if g.batch == 0 || g.batch > i32::MAX as usize {
        return bad(format!("batch {}", g.batch));
    }
    Ok((m, n, k))
}

/// Maps a row-major GEMM onto cuBLASLt's column-major one (see the module docs).
pub fn to_column_major(g: &GemmArgs) -> Result<LtProblem> {
    let (m, n, k) = gemm_dims(g)?;
    Ok(LtProblem {
        m: n as u64,
        n: m as u64,
        k: k as u64,
        trans_a: g.trans_b,
        trans_b: g.trans_a,
        a: col_major_of_row_major(&g.b),
        b: col_major_of_row_major(&g.a),
        c: col_major_of_row_major(&g.c),
        batch: g.batch as i32,
    })
}

/// Largest power of two (≤ 256) dividing a device address: cuBLASLt's heuristic must only pick
/// kernels whose alignment needs the operands meet.
fn alignment(ptr: u64) -> u32 {
    if ptr == 0 {
        256
    } else {
        (1u64 << ptr.trailing_zeros().min(8)) as u32
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct AlgoKey {
    problem: LtProblem,
    align: [u32; 3],
}

struct LtState {
    handle: sys::cublasLtHandle_t,
    algos: HashMap<AlgoKey, sys::cublasLtMatmulAlgo_t>,
}

// SAFETY: the handle is only used while holding the Mutex around LtState, so never from two
// threads at once; cuBLASLt handles may move between threads.
unsafe impl Send for LtState {}

/// cuBLASLt handle, workspace and the cached algorithm choices.
pub struct Gemm {
    state: Mutex<LtState>,
    workspace: DevBuf,
    workspace_bytes: usize,
}

/// Frees a cuBLASLt descriptor when dropped (error paths included).
struct Guard<T: Copy>(T, unsafe fn(T) -> std::result::Result<(), lt::CublasError>);

impl<T: Copy> Drop for Guard<T> {
    fn drop(&mut self) {
        // SAFETY: the guarded descriptor was created by the matching create call and is
        // destroyed exactly once, here.
        let _ = unsafe { (self.1)(self.0) };
    }
}

fn layout(d: &LayoutDesc, batch: i32) -> Result<Guard<sys::cublasLtMatrixLayout_t>> {
    let l = Guard(lt::create_matrix_layout(d.ty.cuda(), d.rows, d.cols, d.ld)?, lt::destroy_matrix_layout);
    if batch > 1 {
        // SAFETY: `l.0` is a live layout; the attribute buffers are an i32 and an i64 as the
        // attributes require, and outlive the calls.
        unsafe {
            lt::set_matrix_layout_attribute(
                l.0,
                sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                &batch as *const i32 as *const c_void,
                size_of::<i32>(),
            )?;
            lt::set_matrix_layout_attribute(
                l.0,
                sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                &d.batch_stride as *const i64 as *const c_void,
                size_of::<i64>(),
            )?;
        }
    }
    Ok(l)
}

impl Gemm {
    /// Creates the handle; `workspace` is the cuBLASLt workspace (32 MiB recommended on Hopper).
    pub fn new(workspace: DevBuf, workspace_bytes: usize) -> Result<Self> {
        let handle = lt::create_handle()?;
        Ok(Gemm { state: Mutex::new(LtState { handle, algos: HashMap::new() }), workspace, workspace_bytes })
    }

    /// Number of distinct problems whose algorithm is cached.
    pub fn cached_algorithms(&self) -> usize {
        self.state.lock().map(|s| s.algos.len()).unwrap_or(0)
    }

    /// Enqueues `g` on `stream`.
    pub fn run(&self, stream: cudarc::driver::sys::CUstream, g: &GemmArgs) -> Result<()> {
        let p = to_column_major(g)?;
        if p.m == 0 || p.n == 0 {
            return Ok(());
        }
        if p.k == 0 {
            return Err(CudaError::Unsupported { op: "gemm", detail: "inner dimension 0".into() });
        }
        let (a_ptr, b_ptr, c_ptr) = (g.b.ptr, g.a.ptr, g.c.ptr);
        let key = AlgoKey { problem: p, align: [alignment(a_ptr), alignment(b_ptr), alignment(c_ptr)] };
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let desc = Guard(
            lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, sys::cudaDataType::CUDA_R_32F)?,
            lt::destroy_matmul_desc,
        );
        for (attr, t) in [
            (sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA, p.trans_a),
            (sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB, p.trans_b),
        ] {
            let op: i32 = t as i32; // CUBLAS_OP_N = 0, CUBLAS_OP_T = 1
                                    // SAFETY: live descriptor; the transpose attributes take a 4-byte cublasOperation_t.
            unsafe { lt::set_matmul_desc_attribute(desc.0, attr, &op as *const i32 as *const c_void, size_of::<i32>()) }?;
        }
        let a_l = layout(&p.a, p.batch)?;
        let b_l = layout(&p.b, p.batch)?;
        let c_l = layout(&p.c, p.batch)?;
        let algo = match st.algos.get(&key) {
            Some(a) => *a,
            None => {
                let pref = Guard(lt::create_matmul_pref()?, lt::destroy_matmul_pref);
                let ws = self.workspace_bytes as u64;
                // SAFETY: live preference; attributes take a u64 (workspace) and u32 (alignments).
                unsafe {
                    lt::set_matmul_pref_attribute(
                        pref.0,
                        sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                        &ws as *const u64 as *const c_void,
                        size_of::<u64>(),
                    )?;
                    for (attr, al) in [
                        (sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align[0]),
                        (sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align[1]),
                        (sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align[2]),
                        (sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align[2]),
                    ] {
                        lt::set_matmul_pref_attribute(pref.0, attr, &al as *const u32 as *const c_void, size_of::<u32>())?;
                    }
                }
                // SAFETY: all descriptors are live; C and D share one layout (in-place update).
                let h = unsafe { lt::get_matmul_algo_heuristic(st.handle, desc.0, a_l.0, b_l.0, c_l.0, c_l.0, pref.0) }
                    .map_err(|e| CudaError::Unsupported { op: "gemm", detail: format!("cuBLASLt found no algorithm ({e}) for {p:?}") })?;
                st.algos.insert(key, h.algo);
                h.algo
            }
        };
        let (alpha, beta) = (g.alpha, g.beta);
        // SAFETY: the pointers are live device buffers whose sizes the callers derived from the
        // same rows/cols/ld/batch_stride as the layouts (checked by gemm_dims); the scalars are
        // host f32 as the f32 scale type requires; the workspace holds `workspace_bytes`; all
        // work is on the backend's one stream.
        unsafe {
            lt::matmul(
                st.handle,
                desc.0,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                a_ptr as *const c_void,
                a_l.0,
                b_ptr as *const c_void,
                b_l.0,
                c_ptr as *const c_void,
                c_l.0,
                c_ptr as *mut c_void,
                c_l.0,
                &algo,
                self.workspace.ptr() as *mut c_void,
                self.workspace_bytes,
                stream as sys::cudaStream_t,
            )?;
        }
        Ok(())
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the handle was created in `new` and is destroyed once.
        let _ = unsafe { lt::destroy_handle(st.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Column-major `D = op(A)·op(B)` with cuBLASLt's semantics, over host slices.
    fn lt_reference(p: &LtProblem, a: &[f32], b: &[f32], d: &mut [f32]) {
        for bi in 0..p.batch as usize {
            let (ao, bo, co) = (bi * p.a.batch_stride as usize, bi * p.b.batch_stride as usize, bi * p.c.batch_stride as usize);
            for i in 0..p.m as usize {
                for j in 0..p.n as usize {
                    let mut s = 0.0f64;
                    for q in 0..p.k as usize {
                        // element (r, c) of a column-major matrix is at r + c·ld
                        let av = if p.trans_a { a[ao + q + i * p.a.ld as usize] } else { a[ao + i + q * p.a.ld as usize] };
                        let bv = if p.trans_b { b[bo + j + q * p.b.ld as usize] } else { b[bo + q + j * p.b.ld as usize] };
                        s += av as f64 * bv as f64;
                    }
                    d[co + i + j * p.c.ld as usize] = s as f32;
                }
            }
        }
    }

    #[test]
    fn row_major_gemm_maps_onto_column_major_cublaslt() {
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let (m, n, k, batch) = (5usize, 7usize, 3usize, 2usize);
        for ta in [false, true] {
            for tb in [false, true] {
                // Padded row strides to exercise `ld`.
                let (ar, ac) = if ta { (k, m) } else { (m, k) };
                let (br, bc) = if tb { (n, k) } else { (k, n) };
                let (lda, ldb, ldc) = (ac + 2, bc + 1, n + 3);
                let a: Vec<f32> = (0..batch * ar * lda).map(|_| rnd()).collect();
                let b: Vec<f32> = (0..batch * br * ldb).map(|_| rnd()).collect();
                let g = GemmArgs {
                    a: MatRef { ptr: 0, ty: ElemType::F32, rows: ar, cols: ac, ld: lda, batch_stride: ar * lda },
                    trans_a: ta,
                    b: MatRef { ptr: 0, ty: ElemType::F32, rows: br, cols: bc, ld: ldb, batch_stride: br * ldb },
                    trans_b: tb,
                    c: MatRef { ptr: 0, ty: ElemType::F32, rows: m, cols: n, ld: ldc, batch_stride: m * ldc },
                    batch,
                    alpha: 1.0,
                    beta: 0.0,
                };
                let p = to_column_major(&g).unwrap();
                let mut got = vec![f32::NAN; batch * m * ldc];
                // cuBLASLt's A is our B and its B is our A.
                lt_reference(&p, &b, &a, &mut got);
                for bi in 0..batch {
                    for i in 0..m {
                        for j in 0..n {
                            let mut s = 0.0f64;
                            for q in 0..k {
                                let av = if ta { a[bi * ar * lda + q * lda + i] } else { a[bi * ar * lda + i * lda + q] };
                                let bv = if tb { b[bi * br * ldb + j * ldb + q] } else { b[bi * br * ldb + q * ldb + j] };
                                s += av as f64 * bv as f64;
                            }
                            let x = got[bi * m * ldc + i * ldc + j];
                            assert!((x - s as f32).abs() < 1e-6, "ta={ta} tb={tb} batch {bi} ({i},{j}): {x} vs {s}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn gemm_shape_errors_are_reported() {
        let a = MatRef::dense(0, ElemType::BF16, 4, 8);
        let b = MatRef::dense(0, ElemType::F32, 8, 2);
        let c = MatRef::dense(0, ElemType::F32, 4, 2);
        let g = GemmArgs { a, trans_a: false, b, trans_b: false, c, batch: 1, alpha: 1.0, beta: 0.0 };
        assert!(gemm_dims(&g).unwrap_err().to_string().contains("convert one first"));
        let g = GemmArgs { b: MatRef::dense(0, ElemType::BF16, 7, 2), ..g };
        assert!(gemm_dims(&g).unwrap_err().to_string().contains("op(A) 4×8"));
        assert_eq!(alignment(0x1000), 256);
        assert_eq!(alignment(0x1010), 16);
    }
}
