//! bf16 × bf16 → f32 matrix products, `torch.autocast(bfloat16)`'s numerics on the CPU: both
//! operands are rounded to bf16 (round to nearest even), every product is exact, and the sums
//! are accumulated in f32.
//!
//! The layout is the classic Goto/BLIS blocking (Goto & van de Geijn 2008, "Anatomy of
//! high-performance matrix multiplication"): `op(b)` is packed one `[KC × NC]` block at a time
//! into panels of [`NR`] columns, `op(a)` once per product into bf16 pairs, and a register-tile
//! micro-kernel of `mr` × [`NR`] runs over them. Threads split the output into row groups ×
//! bands of panels, and each task packs its own band of B ([`TaskPlan`]): a product is two
//! fork-joins whatever its size. What is special about
//! bf16 is the pairing: `vdpbf16ps` multiplies *pairs* of bf16 along k and adds both products
//! to one f32 lane, so a packed B panel holds, for each k pair, the NR columns' two values
//! side by side (one `u32` per column), and the micro-kernel broadcasts the matching `u32` pair
//! of each A row. k is padded to an even length with zeros.
//!
//! Kernels: AVX512-BF16 (`_mm512_dpbf16_ps`) chosen at run time; on every other CPU a portable
//! kernel over the same packed panels (bf16 widened to f32, exact products, f32 sums). Both
//! give the same result up to the order of f32 additions. This module must not know about
//! tensors or ops: it turns (transpose flags, row-major slices of f32 or bf16) into one product.

use half::bf16;
use rayon::prelude::*;

/// Columns of a packed B panel: two 16-lane vectors (AVX-512) or two 16-column tiles (AMX).
pub const NR: usize = 32;

/// A packed B panel is two halves of 16 columns, each `[kstride][16]` pairs: a 16 × 16 block
/// of one half (an AMX B tile, or one zmm row per pair) is 1 KiB of contiguous memory.
/// Position of pair `kp`, column `jj` (< NR) in a panel of `kstride` pairs.
#[inline(always)]
fn bpos(kstride: usize, kp: usize, jj: usize) -> usize {
    (jj / 16) * kstride * 16 + kp * 16 + jj % 16
}

/// Block sizes and register-tile shape of one kernel.
#[derive(Clone, Copy, Debug)]
struct Blocking {
    /// Rows of one register tile (A side); packed A blocks are padded to a multiple.
    mr: usize,
    /// k pairs one kernel step consumes: packed blocks are padded to a multiple with zeros.
    k_step: usize,
    /// k pairs per block.
    kcp: usize,
    /// Rows of A per block (a multiple of `mr`).
    mc: usize,
    /// Columns of B per block (a multiple of NR).
    nc: usize,
}
/// Products with fewer multiply-adds than this run on the calling thread.
const PARALLEL_MIN_FLOPS: usize = 1 << 20;

/// One operand of a product as it is stored.
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
}

impl Operand<'_> {
    pub fn len(&self) -> usize {
        match self {
            Operand::F32(d) => d.len(),
            Operand::Bf16(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `idx` as a bf16 bit pattern (f32 rounded to nearest even).
    #[inline(always)]
    fn bits(&self, idx: usize) -> u16 {
        match self {
            Operand::F32(d) => f32_to_bf16_bits(d[idx]),
            Operand::Bf16(d) => d[idx].to_bits(),
        }
    }
}

/// f32 → bf16 bits, round to nearest even; NaN stays NaN (quiet). Same result as
/// `half::bf16::from_f32`, written so that loops over it vectorise.
#[inline(always)]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// bf16 bits → f32 (exact).
#[inline(always)]
fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Round every element to bf16 and back: the values a bf16 product sees (tests and twins).
pub fn round_to_bf16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16_bits_to_f32(f32_to_bf16_bits(v))).collect()
}

/// Which micro-kernel this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Intel AMX tiles (`tdpbf16ps`, 16 × 16 × 32 per instruction): ≈ 800 GFLOP/s per core on
    /// the development machine, 8× its `vdpbf16ps` rate.
    Amx,
    /// `vdpbf16ps` on 512-bit vectors (AMD Zen 4: two per cycle; Intel: one per two cycles).
    Avx512Bf16,
    /// bf16 widened to f32 in registers, f32 multiply-adds (any CPU).
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU supports, checked once. `QTRAIN_BF16_KERNEL=amx|avx512bf16|
    /// portable` picks a slower one (benchmarks, tests); asking for one the CPU lacks falls
    /// back to detection.
    pub fn detect() -> Kernel {
        static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *KERNEL.get_or_init(|| {
            let supported = Kernel::supported();
            let wanted = match std::env::var("QTRAIN_BF16_KERNEL").as_deref() {
                Ok("amx") => Some(Kernel::Amx),
                Ok("avx512bf16") => Some(Kernel::Avx512Bf16),
                Ok("portable") => Some(Kernel::Portable),
                _ => None,
            };
            wanted.filter(|k| supported.contains(k)).unwrap_or(supported[0])
        })
    }

    /// Every kernel this CPU can run, fastest first (always ends with `Portable`).
    pub fn supported() -> Vec<Kernel> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if amx::available() {
                out.push(Kernel::Amx);
            }
            if std::arch::is_x86_feature_detected!("avx512bf16") && std::arch::is_x86_feature_detected!("avx512f") {
                out.push(Kernel::Avx512Bf16);
            }
        }
        out.push(Kernel::Portable);
        out
    }

    /// "AMX-BF16" / "AVX512-BF16" / "portable": for the one log line that says which path runs.
    pub fn describe(self) -> &'static str {
        match self {
            Kernel::Amx => "AMX-BF16",
            Kernel::Avx512Bf16 => "AVX512-BF16",
            Kernel::Portable => "portable f32-widening",
        }
    }

    fn blocking(self) -> Blocking {
        match self {
            // A 32 × 32 tile of four accumulator tiles. Long k blocks (512 pairs) amortise the
            // accumulators' load and store: 128 / 192 / 512 / 1024 pairs measured 330 / 355 /
            // 460 / 420 GFLOP/s on one core at 512 × 4864 × 896. The kernel itself runs at
            // 1.2–1.7 TFLOP/s per core on L2-resident tiles, so the blocks are as wide as helps.
            // Measured on the Intel machine (2026-12-06) when every (nc, kcp) block was two
            // fork-joins shared by all threads (tasks now pack their own B, see `TaskPlan`): at
            // 2 threads, 512 × 4864 × 896: (mc, nc) = (128, 1024) 757, (512, 1024) 949, (512,
            // 4096) 1,115, (512, 8192) 1,160 GFLOP/s; 512 × 18944 × 3584: 668 / 668 / 722 / 690;
            // nc 256 and 512 were slower, kcp 256 25 % slower. Not re-measured since: the later
            // sessions' machine has no AMX.
            Kernel::Amx => Blocking { mr: 32, k_step: 16, kcp: 512, mc: 512, nc: 4096 },
            // 12 rows × 2 vectors = 24 accumulators of the 32 zmm registers. A B panel of 512
            // pairs is 64 KiB (L1 is 48 KiB, but the panel is read in order and the next lines
            // come from L2 while the 12 A rows stay in L1); 192 rows of A per block are 384 KiB
            // of L2. Measured on the Zen 5 machine (2 threads, alternated, GFLOP/s at 0.5B
            // q/gate/down and 7B gate): (kcp, mc, nc) = (128, 96, 2048) 791/854/829/–,
            // (256, 384, 512) 810/860/803/730, (512, 192, 2048) 801/875/827/687,
            // (512, 192, 512) 801/889/822/741, (64, 512, 2048) 743/748/756/–.
            Kernel::Avx512Bf16 | Kernel::Portable => Blocking { mr: 12, k_step: 1, kcp: 512, mc: 192, nc: 512 },
        }
    }
}

/// `op(a)` `[m, k]` and `op(b)` `[k, n]` of one product, row-major slices, size-checked.
#[derive(Clone, Copy)]
pub struct Product<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Operand<'a>,
    pub trans_a: bool,
    pub b: Operand<'a>,
    pub trans_b: bool,
}

impl<'a> Product<'a> {
    /// Panics when a slice does not hold its `[m, k]` / `[k, n]`: callers check shapes first
    /// (the backend ops return typed errors), so a mismatch here is a bug in this crate.
    pub fn new(m: usize, n: usize, k: usize, a: Operand<'a>, trans_a: bool, b: Operand<'a>, trans_b: bool) -> Self {
        assert_eq!(a.len(), m * k, "gemm_bf16: a has the wrong size");
        assert_eq!(b.len(), k * n, "gemm_bf16: b has the wrong size");
        Product { m, n, k, a, trans_a, b, trans_b }
    }

    /// `op(a)[i][kk]` as bf16 bits, zero past k (the pad of an odd k).
    #[inline(always)]
    fn a_bits(&self, i: usize, kk: usize) -> u16 {
        if kk >= self.k {
            return 0;
        }
        self.a.bits(element(self.trans_a, self.m, self.k, i, kk))
    }

    /// `op(b)[kk][j]` as bf16 bits, zero past k.
    #[inline(always)]
    fn b_bits(&self, kk: usize, j: usize) -> u16 {
        if kk >= self.k {
            return 0;
        }
        self.b.bits(element(self.trans_b, self.k, self.n, kk, j))
    }

    fn flops(&self) -> usize {
        self.m * self.n * self.k
    }
}

/// Index of `op(x)[r][c]` in a row-major slice: `op(x)` is `[rows, cols]`, stored as it is or,
/// when `trans`, as `[cols, rows]`.
#[inline(always)]
fn element(trans: bool, rows: usize, cols: usize, r: usize, c: usize) -> usize {
    if trans {
        c * rows + r
    } else {
        r * cols + c
    }
}

/// Two bf16 (k, k+1) in one `u32`, k in the low half: `vdpbf16ps`'s pair layout.
#[inline(always)]
fn pair(lo: u16, hi: u16) -> u32 {
    lo as u32 | (hi as u32) << 16
}

/// `c = [c +] alpha · bf16(op(a)) · bf16(op(b))`, c `[m, n]` row-major. With `accumulate`
/// false, c's old contents are never read. `parallel` spreads the work over rayon's threads.
pub fn gemm_bf16(p: &Product<'_>, c: &mut [f32], accumulate: bool, alpha: f32, parallel: bool) {
    assert_eq!(c.len(), p.m * p.n, "gemm_bf16: c has the wrong size");
    // SAFETY: `c` is a uniquely borrowed, initialised `[m, n]`.
    unsafe { gemm_bf16_raw(p, c.as_mut_ptr(), accumulate, alpha, parallel, Kernel::detect()) }
}

/// [`gemm_bf16`] into a new vector (not zero-filled first: the product writes every element).
pub fn gemm_bf16_new(p: &Product<'_>, alpha: f32, parallel: bool) -> Vec<f32> {
    let mut c = Vec::with_capacity(p.m * p.n);
    // SAFETY: room for m·n elements; with `accumulate` false each is written before it is read
    // (k = 0 products are zero-filled), so all are initialised when the length is set.
    unsafe {
        gemm_bf16_raw(p, c.as_mut_ptr(), false, alpha, parallel, Kernel::detect());
        c.set_len(p.m * p.n);
    }
    c
}

/// A `*mut f32` that may cross threads: the tasks below write disjoint tiles of `c`.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: only used for disjoint writes (each task owns whole tiles).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method, not a field access, so closures capture the whole `Send` wrapper.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// The product into `c` (`m · n` writable f32s aliasing neither operand; initialised when
/// `accumulate`), with an explicit kernel (tests run both).
///
/// # Safety
/// `c` must be valid for `m · n` writes (and reads when `accumulate`).
pub unsafe fn gemm_bf16_raw(p: &Product<'_>, c: *mut f32, accumulate: bool, alpha: f32, parallel: bool, kernel: Kernel) {
    let (m, n) = (p.m, p.n);
    if m == 0 || n == 0 {
        return;
    }
    if p.k == 0 {
        if !accumulate {
            // SAFETY: the caller's contract; all-zero bits are 0.0f32.
            unsafe { std::ptr::write_bytes(c, 0, m * n) };
        }
        return;
    }
    let threads = if parallel && p.flops() >= PARALLEL_MIN_FLOPS { rayon::current_num_threads().max(1) } else { 1 };
    // f32 operands in the layouts the packers have no fast path for (attention's products, the
    // weight gradient's dyᵀ) are first brought into one that has: op(a) transposed to row-major,
    // B rounded to bf16 (the packers then move 16-bit pairs with vector shuffles).
    let (a_rows, b_bf16);
    let mut p = *p;
    if let (Operand::F32(a), true) = (p.a, p.trans_a) {
        a_rows = transpose_f32(a, p.k, p.m);
        (p.a, p.trans_a) = (Operand::F32(&a_rows), false);
    }
    if let Operand::F32(b) = p.b {
        b_bf16 = to_bf16(b, threads);
        p.b = Operand::Bf16(&b_bf16);
    }
    let p = &p;
    if let (true, Operand::Bf16(w), true, false) = (m <= GEMV_MAX_ROWS, p.b, p.trans_b, p.trans_a) {
        // SAFETY: forwarded from the caller.
        unsafe { gemv_weight_rows(p, w, c, accumulate, alpha, threads) };
        return;
    }
    let bl = kernel.blocking();
    let pairs = p.k.div_ceil(2);
    let out = OutPtr(c);
    // op(a) as bf16 pairs once for the whole product: `[m_pad][lda]`, lda = pairs rounded up to
    // the kernel's k step, rows padded to a multiple of the register tile.
    let lda = pairs.div_ceil(bl.k_step) * bl.k_step;
    // The packed A is reused between products on the same thread: a fresh multi-megabyte
    // allocation per product is a fresh mmap, whose page faults cost 10 % of a 512 × 896 × 896
    // product.
    let mut a_pack = A_SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    // AMX reads A as 16-row × 16-pair tiles: stored tile after tile (1 KiB each, k-major within
    // a 16-row group), a register tile's A is two sequential streams instead of 32 strided rows
    // (+3–10 % at the Qwen MLP shapes).
    let tile_major = kernel == Kernel::Amx;
    let a_src = aligned64(&mut a_pack, p.m.div_ceil(bl.mr) * bl.mr * lda);
    pack_a(p, lda, threads, tile_major, a_src);
    let a = PackedA { data: a_src, lda, tile_major };
    let plan = TaskPlan::new(m, n.div_ceil(NR), threads, &bl);
    let task = |t: usize| {
        let (rows, panels) = plan.task(t);
        // Each task packs the B panels of its own band, in its thread's buffer: no task waits
        // for another between k blocks, so a product is two fork-joins (pack A, multiply)
        // whatever its size. (Shared B blocks cost two fork-joins per (nc, kcp) block, ≈ 12 µs
        // each on the 2-core VM, and idle threads at every join.)
        let mut b_pack = B_SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let _tiles = TileState::enter(kernel);
        let block_panels = bl.nc / NR;
        for jp0 in panels.clone().step_by(block_panels) {
            let jc = jp0 * NR;
            let nc = (block_panels * NR).min(panels.end * NR - jc).min(n - jc);
            for pc in (0..pairs).step_by(bl.kcp) {
                let kcp = bl.kcp.min(pairs - pc);
                let kstride = kcp.div_ceil(bl.k_step) * bl.k_step;
                let b_block = aligned64(&mut b_pack, nc.div_ceil(NR) * kstride * NR);
                pack_b(p, b_block, jc, nc, pc, kcp, kstride, 1);
                // The first k block overwrites c (unless the caller accumulates), later ones add.
                let block = Block { jc, nc, pc, kstride, b: b_block, add: accumulate || pc > 0 };
                // SAFETY: the task owns rows × panels of c (the plan's tasks are disjoint).
                unsafe { multiply_block(kernel, &bl, &a, &block, rows.clone(), out, n, alpha) };
            }
        }
        B_SCRATCH.with(|s| *s.borrow_mut() = b_pack);
    };
    if threads > 1 {
        (0..plan.tasks()).into_par_iter().for_each(task);
    } else {
        (0..plan.tasks()).for_each(task);
    }
    A_SCRATCH.with(|s| *s.borrow_mut() = a_pack);
}

/// How a product's output is split into tasks: row groups × bands rectangles, a band being
/// consecutive B panels. Bands cost nothing extra (each B panel is packed by one task), row
/// groups repack their band's B each, so rows are split only when there are too few panels to
/// give every thread 4 tasks (work stealing evens out a thread that the VM stalls).
struct TaskPlan {
    m: usize,
    panels: usize,
    rows_per_group: usize,
    panels_per_band: usize,
}

impl TaskPlan {
    fn new(m: usize, panels: usize, threads: usize, bl: &Blocking) -> TaskPlan {
        let wanted = if threads > 1 { 4 * threads } else { 1 };
        let panels_per_band = panels.div_ceil(wanted.min(panels));
        let bands = panels.div_ceil(panels_per_band);
        let row_groups = wanted.div_ceil(bands).min(m.div_ceil(bl.mr));
        let rows_per_group = m.div_ceil(row_groups).div_ceil(bl.mr) * bl.mr;
        TaskPlan { m, panels, rows_per_group, panels_per_band }
    }

    fn bands(&self) -> usize {
        self.panels.div_ceil(self.panels_per_band)
    }

    /// Every task is non-empty: band and group sizes are rounded up, their counts follow.
    fn tasks(&self) -> usize {
        self.m.div_ceil(self.rows_per_group) * self.bands()
    }

    /// Rows and B panels of task `t`.
    fn task(&self, t: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let (group, band) = (t / self.bands(), t % self.bands());
        let rows = group * self.rows_per_group..((group + 1) * self.rows_per_group).min(self.m);
        let panels = band * self.panels_per_band..((band + 1) * self.panels_per_band).min(self.panels);
        (rows, panels)
    }
}

/// The packed `op(a)` of a product (see [`pack_a`]).
struct PackedA<'a> {
    data: &'a [u32],
    lda: usize,
    tile_major: bool,
}

impl PackedA<'_> {
    /// Distance in pairs between the register tile rows the kernel steps by (a row, or a
    /// 16-row group when tile-major).
    fn row_stride(&self) -> usize {
        if self.tile_major {
            16 * self.lda
        } else {
            self.lda
        }
    }

    /// Pairs `pc .. pc + kstride` of the `mr` rows from `i` (a multiple of `mr`).
    fn rows(&self, i: usize, mr: usize, pc: usize, kstride: usize) -> &[u32] {
        if self.tile_major {
            let (g, stride) = (i / 16, self.row_stride());
            &self.data[g * stride + 16 * pc..(g + mr / 16 - 1) * stride + 16 * (pc + kstride)]
        } else {
            &self.data[i * self.lda + pc..(i + mr - 1) * self.lda + pc + kstride]
        }
    }
}

/// One packed `(nc, kcp)` block of B: columns `jc .. jc + nc`, pairs `pc .. pc + kstride`.
struct Block<'a> {
    jc: usize,
    nc: usize,
    pc: usize,
    kstride: usize,
    b: &'a [u32],
    /// Add to c (a later k block, or the caller accumulates) instead of overwriting it.
    add: bool,
}

/// `c[rows, block columns] (+)= alpha · A[rows, block pairs] · B block`, `bl.mc` rows at a time
/// (so the A rows in use stay in L2 while the block's panels pass), each B panel (in L1) against
/// every register tile of those rows.
///
/// # Safety
/// `out` must be valid for the `[m, ldc]` output and the caller must own `rows` × the block's
/// columns of it.
#[allow(clippy::too_many_arguments)]
unsafe fn multiply_block(
    kernel: Kernel,
    bl: &Blocking,
    a: &PackedA<'_>,
    block: &Block<'_>,
    rows: std::ops::Range<usize>,
    out: OutPtr,
    ldc: usize,
    alpha: f32,
) {
    let panel_len = block.kstride * NR;
    for i0 in rows.clone().step_by(bl.mc) {
        let row_end = (i0 + bl.mc).min(rows.end);
        for (jp, b_panel) in block.b.chunks_exact(panel_len).enumerate() {
            let j0 = block.jc + jp * NR;
            let cols = NR.min(block.jc + block.nc - j0);
            for i in (i0..row_end).step_by(bl.mr) {
                let tile = Tile {
                    kstride: block.kstride,
                    a: a.rows(i, bl.mr, block.pc, block.kstride),
                    lda: a.row_stride(),
                    b: b_panel,
                    c: out.at(i * ldc + j0),
                    ldc,
                    rows: bl.mr.min(row_end - i),
                    cols,
                    alpha,
                    add: block.add,
                };
                // SAFETY: the tile lies inside the caller's rows × columns of c; AMX tiles are
                // configured by the caller when that kernel runs.
                unsafe { run_kernel(kernel, &tile) };
            }
        }
    }
}

/// `src` `[rows, cols]` transposed to `[cols, rows]`, in 32 × 32 blocks (both sides stay in L1).
fn transpose_f32(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const BLOCK: usize = 32;
    let mut out = vec![0.0f32; rows * cols];
    for r0 in (0..rows).step_by(BLOCK) {
        for c0 in (0..cols).step_by(BLOCK) {
            for r in r0..(r0 + BLOCK).min(rows) {
                for c in c0..(c0 + BLOCK).min(cols) {
                    out[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
    out
}

/// `src` rounded to bf16 (nearest even), 32 values per instruction where AVX512-BF16 exists.
fn to_bf16(src: &[f32], threads: usize) -> Vec<bf16> {
    const CHUNK: usize = 1 << 14;
    let mut out = vec![bf16::ZERO; src.len()];
    let fill = |(dst, src): (&mut [bf16], &[f32])| {
        let even = src.len() / 2 * 2;
        match bytemuck::try_cast_slice_mut::<bf16, u32>(&mut dst[..even]) {
            Ok(words) => convert_pairs(&src[..even], words),
            Err(_) => dst[..even].iter_mut().zip(src).for_each(|(d, &s)| *d = bf16::from_bits(f32_to_bf16_bits(s))),
        }
        if even < src.len() {
            dst[even] = bf16::from_bits(f32_to_bf16_bits(src[even]));
        }
    };
    if threads > 1 {
        out.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(fill);
    } else {
        out.chunks_mut(CHUNK).zip(src.chunks(CHUNK)).for_each(fill);
    }
    out
}

/// `len` u32s of `buf` from a 64-byte boundary, growing `buf` as needed (old contents are
/// not kept in place). glibc hands out large blocks 16 bytes past a page start, so without
/// this every 64-byte tile row straddles two cache lines.
fn aligned64(buf: &mut Vec<u32>, len: usize) -> &mut [u32] {
    if buf.len() < len + 15 {
        buf.resize(len + 15, 0);
    }
    let offset = buf.as_ptr().align_offset(64);
    &mut buf[offset..offset + len]
}

thread_local! {
    /// The packed A of the last product this thread started, kept for its capacity.
    static A_SCRATCH: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The packed B block of the last task this thread ran, kept for its capacity.
    static B_SCRATCH: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Products with at most this many rows of `op(a)` against a bf16 weight read as `Wᵀ` (decode
/// steps: one token per sequence) skip packing: packing the weight would read and write all of
/// it per token, twice the memory traffic of the product itself.
const GEMV_MAX_ROWS: usize = 4;

/// Rows of W per task in [`gemv_weight_rows`].
const GEMV_ROWS_PER_TASK: usize = 64;

/// `c [m, n] (+)= alpha · bf16(a) [m, k] · Wᵀ` for a small m, reading the weight `[n, k]` in its
/// stored layout: each output is a dot product of an a-row (rounded to bf16, widened) with a
/// weight row (widened), exact products summed in f32 — the same numerics as the packed path.
///
/// # Safety
/// As [`gemm_bf16_raw`].
unsafe fn gemv_weight_rows(p: &Product<'_>, w: &[bf16], c: *mut f32, accumulate: bool, alpha: f32, threads: usize) {
    let (m, n, k) = (p.m, p.n, p.k);
    let a: Vec<f32> = (0..m * k).map(|idx| bf16_bits_to_f32(p.a_bits(idx / k, idx % k))).collect();
    let out = OutPtr(c);
    let task = |t: usize| {
        let rows = t * GEMV_ROWS_PER_TASK..((t + 1) * GEMV_ROWS_PER_TASK).min(n);
        super::math::vectorized!(|| {
            for j in rows {
                let w_row = &w[j * k..(j + 1) * k];
                for i in 0..m {
                    let dot = dot_widened(&a[i * k..(i + 1) * k], w_row);
                    // SAFETY: (i, j) lies inside c; each task owns its columns j.
                    let dst = unsafe { &mut *out.at(i * n + j) };
                    *dst = if accumulate { *dst + alpha * dot } else { alpha * dot };
                }
            }
        })
    };
    let tasks = n.div_ceil(GEMV_ROWS_PER_TASK);
    if threads > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// `Σ a[t] · w[t]` with w widened from bf16, in 16 partial sums (so it vectorises).
#[inline(always)]
fn dot_widened(a: &[f32], w: &[bf16]) -> f32 {
    const LANES: usize = 16;
    let w = &w[..a.len()];
    let mut acc = [0.0f32; LANES];
    let (ca, cw) = (a.chunks_exact(LANES), w.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cw.remainder()).map(|(x, y)| x * bf16_bits_to_f32(y.to_bits())).sum();
    for (x, y) in ca.zip(cw) {
        for l in 0..LANES {
            acc[l] += x[l] * bf16_bits_to_f32(y[l].to_bits());
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// AMX tile registers configured for one task (per thread state: `ldtilecfg` on entry,
/// `tilerelease` on drop); nothing for the other kernels.
struct TileState(bool);

impl TileState {
    fn enter(kernel: Kernel) -> TileState {
        #[cfg(target_arch = "x86_64")]
        if kernel == Kernel::Amx {
            // SAFETY: `Kernel::Amx` is only chosen after `amx::available()` succeeded.
            unsafe { amx::configure() };
            return TileState(true);
        }
        let _ = kernel;
        TileState(false)
    }
}

impl Drop for TileState {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if self.0 {
            // SAFETY: tiles were configured by `enter` on this thread.
            unsafe { amx::release() };
        }
    }
}

/// Packs `op(b)[2·pc .. 2·(pc + kcp), jc .. jc + nc]` into `nc / NR` panels of
/// `[kstride][NR]` pairs, zero-padding the missing columns of the last panel and the pairs
/// `kcp .. kstride` (the kernel's k granularity).
#[allow(clippy::too_many_arguments)]
fn pack_b(p: &Product<'_>, out: &mut [u32], jc: usize, nc: usize, pc: usize, kcp: usize, kstride: usize, threads: usize) {
    let fill = |(jp, panel): (usize, &mut [u32])| {
        let j0 = jc + jp * NR;
        let cols = NR.min(jc + nc - j0);
        for half in 0..2 {
            panel[half * kstride * 16 + kcp * 16..(half + 1) * kstride * 16].fill(0);
        }
        match (p.b, p.trans_b) {
            // A weight `[n, k]` read as `op(b) = Wᵀ`: column j's pairs are consecutive u32s of
            // row j (k even), so this is a u32 transpose — the hot packing of forward GEMMs.
            // (A 4-byte aligned view exists for every Vec or mmap the backend holds; a slice
            // that is not takes the element-wise path.)
            (Operand::Bf16(w), true) if p.k.is_multiple_of(2) && bytemuck::try_cast_slice::<bf16, u32>(w).is_ok() => {
                let words: &[u32] = bytemuck::cast_slice(w);
                let row_words = p.k / 2;
                #[cfg(target_arch = "x86_64")]
                if cols == NR && std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the feature was just checked; rows j0 .. j0 + 32 of `words` hold
                    // pairs pc .. pc + kcp (k even, pc + kcp ≤ k / 2).
                    unsafe { avx512::transpose_panel(&words[j0 * row_words..(j0 + NR) * row_words], row_words, pc, kcp, kstride, panel) };
                    return;
                }
                for jj in 0..cols {
                    let src = &words[(j0 + jj) * row_words + pc..(j0 + jj) * row_words + pc + kcp];
                    for (kp, &v) in src.iter().enumerate() {
                        panel[bpos(kstride, kp, jj)] = v;
                    }
                }
                for jj in cols..NR {
                    (0..kcp).for_each(|kp| panel[bpos(kstride, kp, jj)] = 0);
                }
            }
            // A weight `[k, n]` read as it is (backward `dy · W`): rows 2kp and 2kp+1 side by side.
            (Operand::Bf16(w), false) => super::math::vectorized!(|| {
                #[allow(unused_mut)]
                let mut first = 0;
                #[cfg(target_arch = "x86_64")]
                if cols == NR && std::arch::is_x86_feature_detected!("avx512bw") {
                    // Pairs whose both rows exist, one call per panel (the shuffle indices load once).
                    first = kcp.min((p.k - 2 * pc) / 2);
                    // SAFETY: avx512bw checked; rows 2·pc .. 2·(pc + first) hold NR values from j0.
                    unsafe { avx512::interleave_panel(w, p.n, j0, pc, first, kstride, panel) };
                }
                for kp in first..kcp {
                    let (k0, k1) = (2 * (pc + kp), 2 * (pc + kp) + 1);
                    for jj in 0..NR {
                        let lo = if jj < cols { w[k0 * p.n + j0 + jj].to_bits() } else { 0 };
                        let hi = if jj < cols && k1 < p.k { w[k1 * p.n + j0 + jj].to_bits() } else { 0 };
                        panel[bpos(kstride, kp, jj)] = pair(lo, hi);
                    }
                }
            }),
            _ => {
                for kp in 0..kcp {
                    let kk = 2 * (pc + kp);
                    for jj in 0..NR {
                        panel[bpos(kstride, kp, jj)] = if jj < cols { pair(p.b_bits(kk, j0 + jj), p.b_bits(kk + 1, j0 + jj)) } else { 0 };
                    }
                }
            }
        }
    };
    if threads > 1 {
        out.par_chunks_mut(kstride * NR).enumerate().for_each(fill);
    } else {
        out.chunks_mut(kstride * NR).enumerate().for_each(fill);
    }
}

/// `op(a)` as row-major bf16 pairs `[m_pad][lda]`: rows padded with zeros up to a multiple of
/// `mr` (the micro-kernel always reads whole tiles), pairs past `k / 2` zero.
fn pack_a(p: &Product<'_>, lda: usize, threads: usize, tile_major: bool, out: &mut [u32]) {
    // Every element of `out` is written below (a full zero-fill first cost 3 % of a training
    // step in memset).
    let used = p.k.div_ceil(2);
    let fill = |(i, dst): (usize, &mut [u32])| {
        if i >= p.m {
            dst.fill(0);
            return;
        }
        dst[used..].fill(0);
        match (p.a, p.trans_a) {
            (Operand::F32(a), false) => {
                let row = &a[i * p.k..(i + 1) * p.k];
                let full = p.k / 2;
                convert_pairs(&row[..2 * full], &mut dst[..full]);
                if p.k % 2 == 1 {
                    dst[full] = pair(f32_to_bf16_bits(row[p.k - 1]), 0);
                }
            }
            (Operand::Bf16(a), false)
                if p.k.is_multiple_of(2) && bytemuck::try_cast_slice::<bf16, u32>(&a[i * p.k..(i + 1) * p.k]).is_ok() =>
            {
                dst[..p.k / 2].copy_from_slice(bytemuck::cast_slice(&a[i * p.k..(i + 1) * p.k]))
            }
            _ => {
                for (kp, d) in dst[..p.k.div_ceil(2)].iter_mut().enumerate() {
                    *d = pair(p.a_bits(i, 2 * kp), p.a_bits(i, 2 * kp + 1));
                }
            }
        }
    };
    if tile_major {
        // One 16-row group at a time: each row packed into a scratch row, then dealt out to
        // the group's tiles.
        let group = |(g, tiles): (usize, &mut [u32])| {
            let mut row = vec![0u32; lda];
            for r in 0..16 {
                fill((16 * g + r, &mut row));
                scatter_row_to_tiles(&row, r, tiles);
            }
        };
        if threads > 1 {
            out.par_chunks_mut(16 * lda).enumerate().for_each(group);
        } else {
            out.chunks_mut(16 * lda).enumerate().for_each(group);
        }
    } else if threads > 1 {
        out.par_chunks_mut(lda).enumerate().for_each(fill);
    } else {
        out.chunks_mut(lda).enumerate().for_each(fill);
    }
}

/// Row `r` (0..16) of a 16-row group, `lda` pairs, dealt out to the group's AMX A tiles
/// (`[16 rows][16 pairs]` each, one after the other along k): pair `kp` of row `r` lands at
/// `(kp / 16) · 256 + r · 16 + kp % 16`. `mr` is a multiple of 16 and `lda` of 16 pairs for AMX.
fn scatter_row_to_tiles(row: &[u32], r: usize, tiles: &mut [u32]) {
    for (kt, chunk) in row.chunks_exact(16).enumerate() {
        tiles[kt * 256 + r * 16..kt * 256 + r * 16 + 16].copy_from_slice(chunk);
    }
}

/// `src` (2·n f32) rounded to bf16 as n pairs: AVX512-BF16's `vcvtne2ps2bf16` where the CPU has
/// it (round to nearest even like [`f32_to_bf16_bits`]; it also flushes f32 subnormals, below
/// 1.2e-38, to zero), else the scalar rounding compiled 16-wide.
fn convert_pairs(src: &[f32], dst: &mut [u32]) {
    debug_assert_eq!(src.len(), 2 * dst.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bf16") {
        // SAFETY: the feature was just checked; lengths as asserted.
        unsafe { avx512::convert_pairs(src, dst) };
        return;
    }
    super::math::vectorized!(|| {
        for (idx, d) in dst.iter_mut().enumerate() {
            *d = pair(f32_to_bf16_bits(src[2 * idx]), f32_to_bf16_bits(src[2 * idx + 1]));
        }
    })
}

/// One register tile's work: `c[rows, cols] (+)= alpha · A[mr × kstride pairs] · B[kstride pairs × NR]`.
struct Tile<'a> {
    kstride: usize,
    /// `mr` rows of `kstride` pairs at row stride `lda`.
    a: &'a [u32],
    lda: usize,
    /// `[kstride][NR]` pairs.
    b: &'a [u32],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    alpha: f32,
    add: bool,
}

/// # Safety
/// `tile.c` must be valid for `rows` rows of `cols` elements at stride `ldc`.
unsafe fn run_kernel(kernel: Kernel, tile: &Tile<'_>) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Kernel::supported` lists Avx512Bf16 only after checking the CPU features.
        Kernel::Avx512Bf16 => unsafe { avx512::tile(tile) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above for AMX; the caller configured the tiles (`TileState`).
        Kernel::Amx => unsafe { amx::tile(tile) },
        #[allow(unreachable_patterns)]
        _ => unsafe { portable_tile(tile) },
    }
}

/// Rows of the portable and AVX-512 register tiles.
const PORTABLE_MR: usize = 12;

/// The portable micro-kernel: the same packed panels, bf16 widened to f32, exact products.
///
/// # Safety
/// As [`run_kernel`].
unsafe fn portable_tile(t: &Tile<'_>) {
    let mut acc = [[0.0f32; NR]; PORTABLE_MR];
    for kp in 0..t.kstride {
        let b: [u32; NR] = std::array::from_fn(|jj| t.b[bpos(t.kstride, kp, jj)]);
        for (i, acc_row) in acc.iter_mut().enumerate() {
            let a = t.a[i * t.lda + kp];
            let (a0, a1) = (bf16_bits_to_f32(a as u16), bf16_bits_to_f32((a >> 16) as u16));
            for (s, &bv) in acc_row.iter_mut().zip(&b) {
                *s += a0 * bf16_bits_to_f32(bv as u16) + a1 * bf16_bits_to_f32((bv >> 16) as u16);
            }
        }
    }
    for (i, acc_row) in acc.iter().enumerate().take(t.rows) {
        // SAFETY: row i < rows, columns < cols, as the caller guarantees.
        let c = unsafe { std::slice::from_raw_parts_mut(t.c.add(i * t.ldc), t.cols) };
        for (c, &s) in c.iter_mut().zip(acc_row) {
            *c = if t.add { *c + t.alpha * s } else { t.alpha * s };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Tile, NR, PORTABLE_MR as MR};

    /// The AVX512-BF16 micro-kernel: 24 f32 accumulators (`MR` rows × two 16-lane vectors), per
    /// k pair two loads of B and one broadcast of each A row's pair.
    ///
    /// # Safety
    /// The CPU must support avx512f and avx512bf16; `t.c` as in [`super::run_kernel`].
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn tile(t: &Tile<'_>) {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let (a, b, kcp, lda) = (t.a.as_ptr(), t.b.as_ptr(), t.kstride, t.lda);
        debug_assert!(t.a.len() >= (MR - 1) * lda + kcp && t.b.len() >= kcp * NR);
        for kp in 0..kcp {
            // SAFETY: kp < kcp, so both B vectors lie in the `[kcp][NR]` panel.
            let (b0, b1) = unsafe {
                (_mm512_loadu_si512(b.add(kp * 16) as *const __m512i), _mm512_loadu_si512(b.add((kcp + kp) * 16) as *const __m512i))
            };
            let (b0, b1) = (std::mem::transmute::<__m512i, __m512bh>(b0), std::mem::transmute::<__m512i, __m512bh>(b1));
            for (i, acc_row) in acc.iter_mut().enumerate() {
                // SAFETY: i < MR rows of kcp pairs.
                let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(unsafe { *a.add(i * lda + kp) } as i32));
                acc_row[0] = _mm512_dpbf16_ps(acc_row[0], av, b0);
                acc_row[1] = _mm512_dpbf16_ps(acc_row[1], av, b1);
            }
        }
        let alpha = _mm512_set1_ps(t.alpha);
        let mask_of = |cols: usize| -> __mmask16 {
            if cols >= 16 {
                0xffff
            } else {
                ((1u32 << cols) - 1) as __mmask16
            }
        };
        let masks = [mask_of(t.cols.min(16)), mask_of(t.cols.saturating_sub(16))];
        for (i, acc_row) in acc.iter().enumerate().take(t.rows) {
            for (half, &v) in acc_row.iter().enumerate() {
                if masks[half] == 0 {
                    continue;
                }
                // SAFETY: row i < rows; the mask limits the lanes to columns < cols.
                unsafe {
                    let c = t.c.add(i * t.ldc + half * 16);
                    let mut out = _mm512_mul_ps(v, alpha);
                    if t.add {
                        out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(masks[half], c));
                    }
                    _mm512_mask_storeu_ps(c, masks[half], out);
                }
            }
        }
    }
    /// `src` (2·n f32) as n bf16 pairs with `vcvtne2ps2bf16`, 32 values per instruction.
    ///
    /// # Safety
    /// The CPU must support avx512f and avx512bf16; `src.len() == 2 · dst.len()`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn convert_pairs(src: &[f32], dst: &mut [u32]) {
        let n = dst.len();
        let full = n / 16 * 16;
        for i in (0..full).step_by(16) {
            // SAFETY: pairs i .. i + 16 are f32 2i .. 2i + 32 of src, all in bounds.
            unsafe {
                let lo = _mm512_loadu_ps(src.as_ptr().add(2 * i));
                let hi = _mm512_loadu_ps(src.as_ptr().add(2 * i + 16));
                let packed = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(dst.as_mut_ptr().add(i) as *mut __m512i, packed);
            }
        }
        for i in full..n {
            dst[i] = super::pair(super::f32_to_bf16_bits(src[2 * i]), super::f32_to_bf16_bits(src[2 * i + 1]));
        }
    }

    /// Rows (2·(pc + kp), 2·(pc + kp) + 1) of a bf16 `[k, n]` matrix, columns j0 .. j0 + 32,
    /// interleaved into the pairs of panel row kp, for kp < `count` (`vpermt2w`).
    ///
    /// # Safety
    /// The CPU must support avx512f and avx512bw; those rows and columns exist in `w` and
    /// `panel` holds `count · NR` pairs.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn interleave_panel(
        w: &[half::bf16],
        n: usize,
        j0: usize,
        pc: usize,
        count: usize,
        kstride: usize,
        panel: &mut [u32],
    ) {
        debug_assert!(count == 0 || (2 * (pc + count) - 1) * n + j0 + 32 <= w.len());
        debug_assert!(panel.len() >= kstride * NR && count <= kstride);
        let lo_idx: [u16; 32] = std::array::from_fn(|i| if i % 2 == 0 { (i / 2) as u16 } else { 32 + (i / 2) as u16 });
        let hi_idx: [u16; 32] = std::array::from_fn(|i| lo_idx[i] + 16);
        // SAFETY: index arrays are 64 bytes; rows and panel bounds as the caller guarantees.
        unsafe {
            let (lo_idx, hi_idx) =
                (_mm512_loadu_si512(lo_idx.as_ptr() as *const __m512i), _mm512_loadu_si512(hi_idx.as_ptr() as *const __m512i));
            for kp in 0..count {
                let k0 = 2 * (pc + kp);
                let a = _mm512_loadu_si512(w.as_ptr().add(k0 * n + j0) as *const __m512i);
                let b = _mm512_loadu_si512(w.as_ptr().add((k0 + 1) * n + j0) as *const __m512i);
                let dst = panel.as_mut_ptr();
                _mm512_storeu_si512(dst.add(kp * 16) as *mut __m512i, _mm512_permutex2var_epi16(a, lo_idx, b));
                _mm512_storeu_si512(dst.add((kstride + kp) * 16) as *mut __m512i, _mm512_permutex2var_epi16(a, hi_idx, b));
            }
        }
    }

    /// Packs rows `j0 .. j0 + 32` of a bf16 weight seen as u32 pairs (`rows[jj · row_words + p]`)
    /// into a `[kcp][32]` panel: a u32 transpose, 16 × 16 blocks in registers (unpack 32-bit,
    /// unpack 64-bit, two 128-bit lane shuffles), the remainder of `kcp` element by element.
    ///
    /// # Safety
    /// The CPU must support avx512f; `rows` holds 32 rows of `row_words ≥ pc + kcp` words and
    /// `panel` at least `kcp · NR`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_panel(rows: &[u32], row_words: usize, pc: usize, kcp: usize, kstride: usize, panel: &mut [u32]) {
        debug_assert!(rows.len() >= NR * row_words && row_words >= pc + kcp && panel.len() >= kstride * NR && kcp <= kstride);
        let full = kcp / 16 * 16;
        for half in 0..2 {
            for kp0 in (0..full).step_by(16) {
                let mut r = [_mm512_setzero_si512(); 16];
                for (i, v) in r.iter_mut().enumerate() {
                    // SAFETY: row half·16 + i, words pc + kp0 .. + 16, inside `rows` (asserted).
                    *v = unsafe { _mm512_loadu_si512(rows.as_ptr().add((half * 16 + i) * row_words + pc + kp0) as *const __m512i) };
                }
                let mut t = [_mm512_setzero_si512(); 16];
                for i in 0..8 {
                    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
                    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
                }
                // u[4g + c]: columns {c, c+4, c+8, c+12} of rows 4g .. 4g+3, one 128-bit lane each.
                let mut u = [_mm512_setzero_si512(); 16];
                for g in 0..4 {
                    let (a, b) = (4 * g, 4 * g + 2);
                    u[4 * g] = _mm512_unpacklo_epi64(t[a], t[b]);
                    u[4 * g + 1] = _mm512_unpackhi_epi64(t[a], t[b]);
                    u[4 * g + 2] = _mm512_unpacklo_epi64(t[a + 1], t[b + 1]);
                    u[4 * g + 3] = _mm512_unpackhi_epi64(t[a + 1], t[b + 1]);
                }
                let mut out = [_mm512_setzero_si512(); 16];
                for c in 0..4 {
                    let (v, v2) = (_mm512_shuffle_i32x4::<0x88>(u[c], u[4 + c]), _mm512_shuffle_i32x4::<0xdd>(u[c], u[4 + c]));
                    let (w, w2) = (_mm512_shuffle_i32x4::<0x88>(u[8 + c], u[12 + c]), _mm512_shuffle_i32x4::<0xdd>(u[8 + c], u[12 + c]));
                    out[c] = _mm512_shuffle_i32x4::<0x88>(v, w);
                    out[c + 8] = _mm512_shuffle_i32x4::<0xdd>(v, w);
                    out[c + 4] = _mm512_shuffle_i32x4::<0x88>(v2, w2);
                    out[c + 12] = _mm512_shuffle_i32x4::<0xdd>(v2, w2);
                }
                for (kk, v) in out.iter().enumerate() {
                    // SAFETY: panel row kp0 + kk < kcp, columns half·16 .. + 16 < NR.
                    unsafe { _mm512_storeu_si512(panel.as_mut_ptr().add(half * kstride * 16 + (kp0 + kk) * 16) as *mut __m512i, *v) };
                }
            }
        }
        for kp in full..kcp {
            for jj in 0..NR {
                panel[super::bpos(kstride, kp, jj)] = rows[jj * row_words + pc + kp];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod amx {
    //! Intel AMX: eight tile registers of up to 16 rows × 64 bytes. `tdpbf16ps C, A, B` adds
    //! `A [16 × 16 pairs] · B [16 pairs × 16]` into C `[16 × 16 f32]`; B's rows hold one k pair
    //! for 16 columns — exactly a half of a packed panel. A register tile here is 32 × 32: four
    //! C tiles (tmm0–3), two A tiles (tmm4–5: rows 0–15, 16–31) and two B tiles (tmm6–7:
    //! columns 0–15, 16–31). The instructions are written in `asm!` (the intrinsics are not
    //! stable); the compiler never uses tile registers itself, so they keep their contents
    //! between the `asm!` blocks of one function.
    use std::arch::asm;

    use super::{Tile, NR};

    /// Rows of one register tile (two A tiles).
    const ROWS: usize = 32;
    /// `arch_prctl` request and the XTILEDATA state component (Linux ≥ 5.16): a process must
    /// ask before its first tile instruction, or the instruction faults.
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;

    /// The palette-1 configuration: every tile 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    static CONFIG: Config = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
            t += 1;
        }
        Config(c)
    };

    /// AMX-TILE and AMX-BF16 in CPUID (leaf 7, EDX bits 24 and 22), and the kernel's permission
    /// to use tile data. Checked once per process by [`super::Kernel::supported`]'s callers.
    pub(super) fn available() -> bool {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
            let cpu = leaf7.edx & (1 << 24) != 0 && leaf7.edx & (1 << 22) != 0;
            cpu && cfg!(target_os = "linux") && request_permission()
        })
    }

    #[cfg(target_os = "linux")]
    fn request_permission() -> bool {
        let ret: i64;
        // SAFETY: the arch_prctl system call (158) with a request that only changes this
        // process's permission to use the XTILEDATA state; it reads and writes no memory.
        unsafe {
            asm!("syscall", inlateout("rax") 158i64 => ret, in("rdi") ARCH_REQ_XCOMP_PERM, in("rsi") XFEATURE_XTILEDATA,
                 lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        ret == 0
    }

    #[cfg(not(target_os = "linux"))]
    fn request_permission() -> bool {
        false
    }

    /// # Safety
    /// [`available`] must have returned true.
    pub(super) unsafe fn configure() {
        // SAFETY: a valid palette-1 configuration, 64-byte aligned.
        unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
    }

    /// # Safety
    /// Tiles were configured on this thread.
    pub(super) unsafe fn release() {
        // SAFETY: releases this thread's tile state; touches no memory.
        asm!("tilerelease", options(nostack, nomem));
    }

    /// One 32 × 32 register tile over `t.kstride` pairs (a multiple of 16). Full tiles with
    /// `alpha == 1` load and store their accumulators straight from and to `c`; edges and
    /// scaled products go through a 32 × 32 buffer.
    ///
    /// # Safety
    /// Tiles configured on this thread; `t.a` holds two 16-row groups of `kstride` pairs in
    /// tile order (see `super::scatter_row_to_tiles`; `t.lda` is the groups' distance), `t.b`
    /// `kstride` rows of NR pairs, and `t.c` as in [`super::run_kernel`].
    pub(super) unsafe fn tile(t: &Tile<'_>) {
        debug_assert!(t.kstride.is_multiple_of(16) && t.a.len() >= t.lda + 16 * t.kstride && t.b.len() >= t.kstride * NR);
        let direct = t.rows == ROWS && t.cols == NR && t.alpha == 1.0;
        // Written whole by the tile stores below before it is read (edges and scaled tiles only).
        let mut buf = std::mem::MaybeUninit::<[f32; ROWS * NR]>::uninit();
        let (c, ldc_bytes) = if direct { (t.c, t.ldc * 4) } else { (buf.as_mut_ptr() as *mut f32, NR * 4) };
        // SAFETY (all blocks): tile loads read 16 rows × 64 bytes at the given stride inside
        // `t.a` / `t.b` (sizes asserted above) or inside the caller's c / the local buffer.
        unsafe {
            if direct && t.add {
                asm!(
                    "tileloadd tmm0, [{c0} + {s}*1]",
                    "tileloadd tmm1, [{c1} + {s}*1]",
                    "tileloadd tmm2, [{c2} + {s}*1]",
                    "tileloadd tmm3, [{c3} + {s}*1]",
                    c0 = in(reg) c, c1 = in(reg) c.add(16), c2 = in(reg) c.add(16 * t.ldc), c3 = in(reg) c.add(16 * t.ldc + 16),
                    s = in(reg) ldc_bytes, options(nostack, readonly)
                );
            } else {
                asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
            }
            let (a, b) = (t.a.as_ptr(), t.b.as_ptr());
            for kp in (0..t.kstride).step_by(16) {
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a.add(16 * kp), a1 = in(reg) a.add(t.lda + 16 * kp), sa = in(reg) 64usize,
                    b0 = in(reg) b.add(kp * 16), b1 = in(reg) b.add((t.kstride + kp) * 16), sb = in(reg) 64usize,
                    options(nostack, readonly)
                );
            }
            let ldc = ldc_bytes / 4;
            asm!(
                "tilestored [{c0} + {s}*1], tmm0",
                "tilestored [{c1} + {s}*1], tmm1",
                "tilestored [{c2} + {s}*1], tmm2",
                "tilestored [{c3} + {s}*1], tmm3",
                c0 = in(reg) c, c1 = in(reg) c.add(16), c2 = in(reg) c.add(16 * ldc), c3 = in(reg) c.add(16 * ldc + 16),
                s = in(reg) ldc_bytes, options(nostack)
            );
        }
        if !direct {
            // SAFETY: the four tile stores wrote all 32 × 32 values.
            let buf = unsafe { buf.assume_init() };
            for (i, row) in buf.chunks(NR).take(t.rows).enumerate() {
                // SAFETY: row i < rows and columns < cols lie inside the caller's c.
                let out = unsafe { std::slice::from_raw_parts_mut(t.c.add(i * t.ldc), t.cols) };
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = if t.add { *o + t.alpha * v } else { t.alpha * v };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// f64 reference over bf16-rounded operands: the exact answer a bf16 product approximates
    /// only by its f32 summation.
    fn reference(p: &Product<'_>) -> Vec<f64> {
        let mut c = vec![0.0f64; p.m * p.n];
        for i in 0..p.m {
            for j in 0..p.n {
                c[i * p.n + j] =
                    (0..p.k).map(|kk| bf16_bits_to_f32(p.a_bits(i, kk)) as f64 * bf16_bits_to_f32(p.b_bits(kk, j)) as f64).sum();
            }
        }
        c
    }

    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    /// Every kernel's blocking fits the driver: row blocks are whole register tiles, column
    /// blocks whole panels, k blocks whole kernel steps, and AMX register tiles whole 16-row
    /// groups (the tile-major A layout). Checked for all kernels, not only this CPU's.
    #[test]
    fn blockings_are_whole_tiles() {
        for kernel in [Kernel::Amx, Kernel::Avx512Bf16, Kernel::Portable] {
            let bl = kernel.blocking();
            assert_eq!(bl.mc % bl.mr, 0, "{kernel:?}");
            assert_eq!(bl.nc % NR, 0, "{kernel:?}");
            assert_eq!(bl.kcp % bl.k_step, 0, "{kernel:?}");
        }
        assert_eq!(Kernel::Amx.blocking().mr % 16, 0);
    }

    /// A task plan covers every (row, panel) of the output exactly once, its row groups start
    /// on register-tile boundaries, and it gives every thread work when there is enough.
    #[test]
    fn task_plans_cover_the_output_once() {
        for kernel in [Kernel::Amx, Kernel::Avx512Bf16] {
            let bl = kernel.blocking();
            for &(m, panels) in &[(1, 1), (5, 3), (512, 4), (512, 28), (530, 1), (2048, 600), (37, 100)] {
                for threads in [1, 2, 3, 8] {
                    let plan = TaskPlan::new(m, panels, threads, &bl);
                    let mut seen = vec![0u8; m * panels];
                    for t in 0..plan.tasks() {
                        let (rows, band) = plan.task(t);
                        assert_eq!(rows.start % bl.mr, 0, "{kernel:?} m {m} panels {panels} threads {threads}");
                        for r in rows {
                            band.clone().for_each(|p| seen[r * panels + p] += 1);
                        }
                    }
                    assert!(seen.iter().all(|&c| c == 1), "{kernel:?} m {m} panels {panels} threads {threads}");
                    let tiles = m.div_ceil(bl.mr) * panels;
                    assert!(plan.tasks() >= threads.min(tiles), "{kernel:?} m {m} panels {panels} threads {threads}");
                }
            }
        }
    }

    #[test]
    fn rounding_matches_half() {
        #[allow(clippy::excessive_precision)]
        for x in [0.0f32, -0.0, 1.0, 1.003_906_25, 1.011_718_75, -3.3e-39, 3.4e38, f32::INFINITY, f32::NEG_INFINITY, 1.0e-40] {
            assert_eq!(f32_to_bf16_bits(x), bf16::from_f32(x).to_bits(), "{x}");
        }
        assert!(bf16_bits_to_f32(f32_to_bf16_bits(f32::NAN)).is_nan());
        let mut rng = Rng::new(5);
        for _ in 0..10_000 {
            let x = (rng.normal() * 1e3) as f32;
            assert_eq!(f32_to_bf16_bits(x), bf16::from_f32(x).to_bits(), "{x}");
        }
    }

    /// Every kernel, transpose pair, storage type and edge shape against the f64 reference of
    /// the rounded operands: only f32 summation error remains (≤ k · 2⁻²⁴ relative to Σ|a·b|).
    #[test]
    fn all_kernels_layouts_and_edges_match_the_rounded_reference() {
        let mut rng = Rng::new(17);
        let kernels = Kernel::supported();
        // Several k blocks (1100), row blocks (530) and column blocks (4200) for every blocking.
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (13, 33, 2),
            (12, 32, 256),
            (25, 70, 257),
            (97, 40, 300),
            (1, 2100, 64),
            (200, 9, 31),
            (4, 3, 0),
            (150, 40, 1100),
            (530, 33, 40),
            (40, 4200, 20),
        ];
        for &(m, n, k) in &shapes {
            let (a32, b32) = (random(&mut rng, m * k), random(&mut rng, k * n));
            let a16: Vec<bf16> = a32.iter().map(|&x| bf16::from_f32(x)).collect();
            let b16: Vec<bf16> = b32.iter().map(|&x| bf16::from_f32(x)).collect();
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                for (a, b) in [
                    (Operand::F32(&a32), Operand::F32(&b32)),
                    (Operand::F32(&a32), Operand::Bf16(&b16)),
                    (Operand::Bf16(&a16), Operand::Bf16(&b16)),
                ] {
                    let p = Product::new(m, n, k, a, ta, b, tb);
                    let want = reference(&p);
                    let abs: Vec<f64> = {
                        let pa = Product::new(m, n, k, a, ta, b, tb);
                        let mut s = vec![0.0f64; m * n];
                        for i in 0..m {
                            for j in 0..n {
                                s[i * n + j] = (0..k)
                                    .map(|kk| (bf16_bits_to_f32(pa.a_bits(i, kk)) as f64 * bf16_bits_to_f32(pa.b_bits(kk, j)) as f64).abs())
                                    .sum();
                            }
                        }
                        s
                    };
                    for &kernel in &kernels {
                        for parallel in [false, true] {
                            let mut c = vec![f32::NAN; m * n];
                            unsafe { gemm_bf16_raw(&p, c.as_mut_ptr(), false, 0.5, parallel, kernel) };
                            for (idx, (&x, &y)) in c.iter().zip(&want).enumerate() {
                                let tol = 1e-6 * abs[idx] * (k as f64).max(1.0).sqrt() + 1e-30;
                                assert!(
                                    (x as f64 - 0.5 * y).abs() <= tol,
                                    "{kernel:?} {m}x{n}x{k} ta={ta} tb={tb} [{idx}]: {x} vs {}",
                                    0.5 * y
                                );
                            }
                            unsafe { gemm_bf16_raw(&p, c.as_mut_ptr(), true, 1.0, parallel, kernel) };
                            for (idx, (&x, &y)) in c.iter().zip(&want).enumerate() {
                                let tol = 2e-6 * abs[idx] * (k as f64).max(1.0).sqrt() + 1e-30;
                                assert!((x as f64 - 1.5 * y).abs() <= tol, "accumulate {kernel:?} {m}x{n}x{k} [{idx}]");
                            }
                        }
                    }
                }
            }
        }
    }

    /// The bf16 product against its f32 twin on fresh random inputs: the relative error is what
    /// rounding both operands to 8 significant bits gives (≤ 1e-2 of the result's scale).
    #[test]
    fn bf16_product_tracks_the_f32_twin_within_bf16_rounding() {
        let mut rng = Rng::new(23);
        let (m, n, k) = (64, 96, 512);
        let (a, b) = (random(&mut rng, m * k), random(&mut rng, n * k));
        let got = gemm_bf16_new(&Product::new(m, n, k, Operand::F32(&a), false, Operand::F32(&b), true), 1.0, true);
        let want = super::super::gemm::gemm_f32_new(m, n, k, &a, false, &b, true, 1.0);
        let scale = (want.iter().map(|x| x * x).sum::<f32>() / want.len() as f32).sqrt();
        let worst = got.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst / scale < 1e-2, "worst {worst} for rms {scale}");
        assert!(worst > 0.0, "bf16 rounding must change something");
    }
}
