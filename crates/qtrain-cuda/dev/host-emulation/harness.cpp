// Host emulation harness: see run.sh. Not part of the build or of CI.
// Runs the qtrain kernels under host emulation against plain-loop references.
#include <cstdio>
#include <random>
#include <string>
#include <algorithm>
#include "kernels_host.h"

static std::mt19937_64 rng(12345);
static std::vector<float> randn(size_t n, float std = 1.f) { std::normal_distribution<float> d(0.f, std); std::vector<float> v(n); for (auto& x : v) x = d(rng); return v; }
static int failures = 0, checks = 0;
static void check(const std::string& op, const std::vector<float>& got, const std::vector<float>& want, double tol) {
    ++checks;
    double rms = 0; for (float w : want) rms += double(w) * w; rms = std::sqrt(rms / std::max<size_t>(1, want.size()));
    size_t bad = 0, worst = 0; double maxe = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        double e = std::fabs(double(got[i]) - want[i]);
        if (!std::isfinite(got[i]) && std::isfinite(want[i])) e = INFINITY;
        if (e > maxe) { maxe = e; worst = i; }
        if (e > tol * (std::fabs(want[i]) + rms)) ++bad;
    }
    printf("%s %-50s n=%-8zu max_abs=%.3e bad=%zu\n", bad ? "FAIL" : "PASS", op.c_str(), want.size(), maxe, bad);
    if (bad) { ++failures; printf("   worst [%zu] got %g want %g\n", worst, got[worst], want[worst]); }
}
static unsigned row_block(size_t cols) { size_t t = ((cols + 3) / 4 + 31) / 32 * 32; return (unsigned)std::clamp<size_t>(t, 32, 1024); }
static dim3 g1(size_t n) { return dim3{(unsigned)std::clamp<size_t>((n + 255) / 256, 1, 65535 * 4), 1, 1}; }
static const dim3 B256{256, 1, 1};

// Independent bf16 rounding (nearest, ties to even) through doubles.
static float bf16_ref(float x) {
    if (std::isnan(x)) return x;
    unsigned u; std::memcpy(&u, &x, 4);
    unsigned lo = u & 0xFFFF0000u, hi = lo + 0x10000u;
    float flo, fhi; std::memcpy(&flo, &lo, 4); std::memcpy(&fhi, &hi, 4);
    // Past the largest finite bf16 the next value up is 2^128 (rounds to infinity).
    double dhi = std::isinf(fhi) ? std::copysign(std::ldexp(1.0, 128), double(x)) : double(fhi);
    double dl = std::fabs(double(x) - flo), dh = std::fabs(dhi - x);
    if (dl < dh) return flo; if (dh < dl) return fhi;
    return ((lo >> 16) & 1) ? fhi : flo;
}

static void test_copy() {
    size_t n = 5000; auto x = randn(n, 3.f);
    x[0] = 1.00390625f; x[1] = 1.01171875f; x[2] = -0.0f; x[3] = 65504.f; x[4] = 3.4e38f;
    std::vector<bf16_t> y(n); std::vector<float> back(n), want(n);
    launch(g1(n), B256, 0, [&] { cast_f32_to_bf16(x.data(), y.data(), (long long)n); });
    launch(g1(n), B256, 0, [&] { cast_bf16_to_f32(y.data(), back.data(), (long long)n); });
    for (size_t i = 0; i < n; ++i) want[i] = bf16_ref(x[i]);
    check("cast f32->bf16->f32 (RNE)", back, want, 0);
    size_t rows = 300, cols = 70; auto src = randn(rows * cols); std::vector<unsigned> idx = {5, 0, 299, 17, 17};
    std::vector<float> out(idx.size() * cols), w2(idx.size() * cols);
    launch(g1(out.size()), B256, 0, [&] { gather_rows_f32(src.data(), idx.data(), out.data(), (int)idx.size(), (int)cols); });
    for (size_t r = 0; r < idx.size(); ++r) for (size_t c = 0; c < cols; ++c) w2[r * cols + c] = src[idx[r] * cols + c];
    check("gather_rows_f32", out, w2, 0);
    std::vector<unsigned> didx = {7, 3, 250}; auto s2 = randn(3 * cols); auto dst = randn(rows * cols); auto wd = dst;
    launch(g1(3 * cols), B256, 0, [&] { scatter_rows_f32(s2.data(), didx.data(), dst.data(), 3, (int)cols); });
    for (size_t r = 0; r < 3; ++r) for (size_t c = 0; c < cols; ++c) wd[didx[r] * cols + c] = s2[r * cols + c];
    check("scatter_rows_f32", dst, wd, 0);
}

static void test_elementwise() {
    size_t rows = 33, cols = 130, n = rows * cols; auto a = randn(n), b = randn(n), bias = randn(cols);
    std::vector<float> out(n), want(n);
    launch(g1(n), B256, 0, [&] { add_f32(a.data(), b.data(), out.data(), (long long)n); });
    for (size_t i = 0; i < n; ++i) want[i] = a[i] + b[i]; check("add_f32", out, want, 0);
    launch(g1(n), B256, 0, [&] { mul_f32(a.data(), b.data(), out.data(), (long long)n); });
    for (size_t i = 0; i < n; ++i) want[i] = a[i] * b[i]; check("mul_f32", out, want, 0);
    auto acc = a; launch(g1(n), B256, 0, [&] { axpy_f32(acc.data(), b.data(), -0.5f, (long long)n); });
    for (size_t i = 0; i < n; ++i) want[i] = a[i] + -0.5f * b[i]; check("axpy_f32", acc, want, 1e-6);
    auto y = a; launch(g1(n), B256, 0, [&] { bias_add_f32(y.data(), bias.data(), (int)rows, (int)cols); });
    for (size_t i = 0; i < n; ++i) want[i] = a[i] + bias[i % cols]; check("bias_add_f32", y, want, 0);
    std::vector<bf16_t> b16(cols); for (size_t c = 0; c < cols; ++c) b16[c] = f32_to_bf16(bias[c]);
    y = a; launch(g1(n), B256, 0, [&] { bias_add_bf16(y.data(), b16.data(), (int)rows, (int)cols); });
    for (size_t i = 0; i < n; ++i) want[i] = a[i] + bf16_ref(bias[i % cols]); check("bias_add_bf16", y, want, 0);
    auto g = randn(n), u = randn(n), dy = randn(n); std::vector<float> dg(n), du(n), wdg(n), wdu(n);
    launch(g1(n), B256, 0, [&] { swiglu_fwd_f32(g.data(), u.data(), out.data(), (long long)n); });
    for (size_t i = 0; i < n; ++i) want[i] = g[i] / (1 + std::exp(-g[i])) * u[i]; check("swiglu_fwd_f32", out, want, 1e-6);
    launch(g1(n), B256, 0, [&] { swiglu_bwd_f32(g.data(), u.data(), dy.data(), dg.data(), du.data(), (long long)n); });
    for (size_t i = 0; i < n; ++i) { double s = 1 / (1 + std::exp(-double(g[i]))); wdg[i] = dy[i] * u[i] * s * (1 + g[i] * (1 - s)); wdu[i] = dy[i] * g[i] * s; }
    check("swiglu_bwd_f32 dgate", dg, wdg, 1e-5); check("swiglu_bwd_f32 dup", du, wdu, 1e-5);
}

static void test_embedding() {
    size_t V = 97, C = 300, N = 50; auto table = randn(V * C); std::vector<unsigned> ids(N); for (auto& i : ids) i = rng() % 10;
    std::vector<float> out(N * C), want(N * C);
    launch(g1(N * C), B256, 0, [&] { embedding_fwd_f32(table.data(), ids.data(), out.data(), (int)N, (int)C); });
    for (size_t n = 0; n < N; ++n) for (size_t c = 0; c < C; ++c) want[n * C + c] = table[ids[n] * C + c];
    check("embedding_fwd_f32", out, want, 0);
    std::vector<bf16_t> t16(V * C); for (size_t i = 0; i < V * C; ++i) t16[i] = f32_to_bf16(table[i]);
    launch(g1(N * C), B256, 0, [&] { embedding_fwd_bf16(t16.data(), ids.data(), out.data(), (int)N, (int)C); });
    for (size_t n = 0; n < N; ++n) for (size_t c = 0; c < C; ++c) want[n * C + c] = bf16_ref(table[ids[n] * C + c]);
    check("embedding_fwd_bf16", out, want, 0);
    auto grad = randn(V * C); auto wg = grad; auto dy = randn(N * C);
    launch(g1(N * C), B256, 0, [&] { embedding_bwd_f32(grad.data(), ids.data(), dy.data(), (int)N, (int)C); });
    for (size_t n = 0; n < N; ++n) for (size_t c = 0; c < C; ++c) wg[ids[n] * C + c] += dy[n * C + c];
    check("embedding_bwd_f32", grad, wg, 1e-6);
}

template <typename W>
static void rms_case(const char* label, size_t rows, size_t cols, bool wbf16) {
    float eps = 1e-6f; auto x = randn(rows * cols, 1.3f); auto wf = randn(cols, 0.2f); for (auto& v : wf) v += 1;
    std::vector<W> w(cols); for (size_t c = 0; c < cols; ++c) { if constexpr (sizeof(W) == 2) w[c] = f32_to_bf16(wf[c]); else w[c] = wf[c]; if (wbf16) wf[c] = bf16_ref(wf[c]); }
    std::vector<float> y(rows * cols), want(rows * cols);
    dim3 blk{row_block(cols), 1, 1};
    launch(dim3{(unsigned)rows, 1, 1}, blk, 0, [&] { if constexpr (sizeof(W) == 2) rms_norm_fwd_bf16(x.data(), w.data(), y.data(), (int)cols, eps); else rms_norm_fwd_f32(x.data(), w.data(), y.data(), (int)cols, eps); });
    std::vector<float> wdx(rows * cols), wdw(cols);
    auto dy = randn(rows * cols); auto dw0 = randn(cols); for (size_t c = 0; c < cols; ++c) wdw[c] = dw0[c];
    for (size_t r = 0; r < rows; ++r) {
        double ss = 0, dot = 0; for (size_t c = 0; c < cols; ++c) { ss += double(x[r * cols + c]) * x[r * cols + c]; dot += double(wf[c]) * dy[r * cols + c] * x[r * cols + c]; }
        double inv = 1 / std::sqrt(ss / cols + eps);
        for (size_t c = 0; c < cols; ++c) {
            want[r * cols + c] = wf[c] * x[r * cols + c] * inv;
            wdx[r * cols + c] = inv * wf[c] * dy[r * cols + c] - x[r * cols + c] * inv * inv * inv * dot / cols;
            wdw[c] += dy[r * cols + c] * x[r * cols + c] * inv;
        }
    }
    check(std::string("rms_norm_fwd ") + label, y, want, 1e-5);
    std::vector<float> dx(rows * cols); auto dw = dw0;
    launch(dim3{(unsigned)std::min<size_t>(rows, 1024), 1, 1}, blk, cols * 4, [&] { if constexpr (sizeof(W) == 2) rms_norm_bwd_bf16(x.data(), w.data(), dy.data(), dx.data(), dw.data(), (int)rows, (int)cols, eps); else rms_norm_bwd_f32(x.data(), w.data(), dy.data(), dx.data(), dw.data(), (int)rows, (int)cols, eps); });
    check(std::string("rms_norm_bwd dx ") + label, dx, wdx, 1e-5); check(std::string("rms_norm_bwd dw ") + label, dw, wdw, 1e-5);
    std::vector<float> dx2(rows * cols);
    launch(dim3{(unsigned)std::min<size_t>(rows, 1024), 1, 1}, blk, 0, [&] { if constexpr (sizeof(W) == 2) rms_norm_bwd_bf16(x.data(), w.data(), dy.data(), dx2.data(), nullptr, (int)rows, (int)cols, eps); else rms_norm_bwd_f32(x.data(), w.data(), dy.data(), dx2.data(), nullptr, (int)rows, (int)cols, eps); });
    check(std::string("rms_norm_bwd dx, no dw ") + label, dx2, wdx, 1e-5);
}

static void test_rope() {
    size_t N = 13, H = 3, D = 16, P = 40, half = D / 2; auto x = randn(N * H * D), cs = randn(P * half), sn = randn(P * half);
    std::vector<unsigned> pos(N); for (auto& p : pos) p = rng() % P;
    std::vector<float> out(N * H * D), want(N * H * D), dx(N * H * D), wdx(N * H * D);
    launch(g1(N * H * half), B256, 0, [&] { rope_fwd_f32(x.data(), cs.data(), sn.data(), pos.data(), out.data(), (int)N, (int)H, (int)D); });
    launch(g1(N * H * half), B256, 0, [&] { rope_bwd_f32(x.data(), cs.data(), sn.data(), pos.data(), dx.data(), (int)N, (int)H, (int)D); });
    for (size_t n = 0; n < N; ++n) for (size_t h = 0; h < H; ++h) for (size_t i = 0; i < half; ++i) {
        size_t b = (n * H + h) * D; float c = cs[pos[n] * half + i], s = sn[pos[n] * half + i];
        want[b + i] = x[b + i] * c - x[b + i + half] * s; want[b + i + half] = x[b + i + half] * c + x[b + i] * s;
        wdx[b + i] = x[b + i] * c + x[b + i + half] * s; wdx[b + i + half] = x[b + i + half] * c - x[b + i] * s;
    }
    check("rope_fwd_f32", out, want, 1e-6); check("rope_bwd_f32", dx, wdx, 1e-6);
}

// ---------------- dropout (kernels/dropout_golden.txt, written by qtrain-core's Philox) ----------------
struct Golden { DropoutArgs args; size_t rows = 0, cols = 0; std::vector<float> mask; };
static Golden g_golden;

static void load_golden(const char* path) {
    FILE* f = fopen(path, "r");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(2); }
    char line[4096]; std::vector<std::string> rows; unsigned long long seed = 0; unsigned layer = 0, module = 0, thr = 0, sbits = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        if (strncmp(line, "seed=", 5) == 0) {
            float p; size_t r, c;
            if (sscanf(line, "seed=%llx layer=%u module=%u p=%f threshold=%u scale_bits=%x rows=%zu cols=%zu", &seed, &layer, &module, &p, &thr, &sbits, &r, &c) != 8) { fprintf(stderr, "bad golden header\n"); exit(2); }
            continue;
        }
        std::string s(line); while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
        if (!s.empty()) rows.push_back(s);
    }
    fclose(f);
    float scale; std::memcpy(&scale, &sbits, 4);
    g_golden.args = DropoutArgs{(unsigned)seed, (unsigned)(seed >> 32), layer, module, thr, scale};
    g_golden.rows = rows.size(); g_golden.cols = rows[0].size();
    for (auto& r : rows) for (char ch : r) g_golden.mask.push_back(ch == '1' ? scale : 0.f);
}

static void test_dropout() {
    const Golden& g = g_golden; size_t n = g.rows * g.cols;
    std::vector<float> ones(n, 1.f), out(n, NAN);
    launch(g1(n), B256, 0, [&] { dropout_apply_f32(ones.data(), out.data(), (long long)g.rows, (int)g.cols, g.args); });
    check("dropout_apply_f32 == golden mask (bit for bit)", out, g.mask, 0);
    std::vector<float> per(n);
    for (size_t r = 0; r < g.rows; ++r) for (size_t c = 0; c < g.cols; ++c) per[r * g.cols + c] = dropout_factor(g.args, (unsigned)r, (unsigned)c);
    check("dropout_factor == golden mask (bit for bit)", per, g.mask, 0);
    auto x = randn(n); std::vector<float> want(n);
    launch(g1(n), B256, 0, [&] { dropout_apply_f32(x.data(), out.data(), (long long)g.rows, (int)g.cols, g.args); });
    for (size_t i = 0; i < n; ++i) want[i] = x[i] * g.mask[i];
    check("dropout_apply_f32 x ⊙ mask", out, want, 0);
}

static void test_lora() {
    // The golden mask's shape, so the masked cases use a mask known independently of the kernels.
    size_t N = g_golden.rows, din = g_golden.cols, dout = 45, r = 5; float s = 2.5f;
    auto x = randn(N * din), a = randn(r * din), b = randn(dout * r), dy = randn(N * dout), y0 = randn(N * dout), dx0 = randn(N * din);
    const DropoutArgs none{0, 0, 0, 0, 0, 1.f};
    for (int use_mask = 0; use_mask < 2; ++use_mask) {
        const DropoutArgs drop = use_mask ? g_golden.args : none;
        auto m = [&](size_t i) { return use_mask ? g_golden.mask[i] : 1.f; };
        std::vector<float> xa(N * r), wxa(N * r), y = y0, wy = y0, g(N * r), wg(N * r), dx = dx0, wdx = dx0;
        launch(dim3{(unsigned)N, 1, 1}, B256, 0, [&] { lora_down_fwd_f32(x.data(), a.data(), xa.data(), (int)din, (int)r, drop); });
        launch(dim3{(unsigned)((dout + 255) / 256), (unsigned)N, 1}, B256, r * 4, [&] { lora_up_fwd_f32(xa.data(), b.data(), y.data(), (int)dout, (int)r, s); });
        launch(dim3{(unsigned)N, 1, 1}, B256, 0, [&] { lora_dyb_bwd_f32(dy.data(), b.data(), g.data(), (int)dout, (int)r, s); });
        // Two row slices, as the launcher splits rows past grid.y's limit: row0 keys the mask.
        size_t half = N / 2;
        launch(dim3{(unsigned)(((din + 3) / 4 + 255) / 256), (unsigned)half, 1}, B256, r * 4, [&] { lora_dx_bwd_f32(g.data(), a.data(), dx.data(), (int)din, (int)r, 0, drop); });
        launch(dim3{(unsigned)(((din + 3) / 4 + 255) / 256), (unsigned)(N - half), 1}, B256, r * 4, [&] { lora_dx_bwd_f32(g.data() + half * r, a.data(), dx.data() + half * din, (int)din, (int)r, (long long)half, drop); });
        for (size_t n = 0; n < N; ++n) {
            for (size_t j = 0; j < r; ++j) { double acc = 0; for (size_t k = 0; k < din; ++k) acc += double(x[n * din + k]) * m(n * din + k) * a[j * din + k]; wxa[n * r + j] = acc;
                double ga = 0; for (size_t o = 0; o < dout; ++o) ga += double(dy[n * dout + o]) * b[o * r + j]; wg[n * r + j] = s * ga; }
            for (size_t o = 0; o < dout; ++o) { double acc = 0; for (size_t j = 0; j < r; ++j) acc += double(wxa[n * r + j]) * b[o * r + j]; wy[n * dout + o] += s * acc; }
            for (size_t k = 0; k < din; ++k) { double acc = 0; for (size_t j = 0; j < r; ++j) acc += double(wg[n * r + j]) * a[j * din + k]; wdx[n * din + k] += acc * m(n * din + k); }
        }
        std::string ms = use_mask ? " (dropout)" : "";
        check("lora_down_fwd_f32" + ms, xa, wxa, 1e-5); check("lora_up_fwd_f32" + ms, y, wy, 1e-5);
        check("lora_dyb_bwd_f32" + ms, g, wg, 1e-5); check("lora_dx_bwd_f32" + ms, dx, wdx, 1e-5);
    }
}

// ---------------- attention ----------------
struct Mask { size_t B, T, S, qoff; std::vector<unsigned char> kv; std::vector<unsigned> seg;
    bool allows(size_t b, size_t i, size_t j) const { size_t q = qoff + i; if (j >= S || j > q) return false;
        if (!kv.empty() && !kv[b * S + j]) return false; if (!seg.empty() && seg[b * S + j] != seg[b * S + q]) return false; return true; } };

// C[z] = alpha * A[z] · op(B[z]) (+ C[z] when add), row-major, A [M,K], B [N,K] (transB) or [K,N].
static void bgemm(size_t Z, size_t M, size_t N, size_t K, const float* A, bool ta, const float* Bm, bool tb, float* C, float alpha, bool add = false) {
    for (size_t z = 0; z < Z; ++z) for (size_t m = 0; m < M; ++m) for (size_t n = 0; n < N; ++n) { double acc = 0;
        for (size_t k = 0; k < K; ++k) { double av = ta ? A[z * M * K + k * M + m] : A[z * M * K + m * K + k]; double bv = tb ? Bm[z * N * K + n * K + k] : Bm[z * N * K + k * N + n]; acc += av * bv; }
        C[z * M * N + m * N + n] = alpha * acc + (add ? C[z * M * N + m * N + n] : 0.f); }
}

// The pieces of ops/attention.rs (Dims::pieces): zc whole slices at a time, or, with rc > 0, blocks
// of rc rows of one slice.
struct Piece { size_t z0, nz, r0, nr; };
static std::vector<Piece> pieces(size_t Z, size_t rows, size_t zc, size_t rc) {
    std::vector<Piece> p;
    if (rc == 0 || rc >= rows) { for (size_t z0 = 0; z0 < Z; z0 += zc) p.push_back({z0, std::min(zc, Z - z0), 0, rows}); }
    else for (size_t z0 = 0; z0 < Z; ++z0) for (size_t r0 = 0; r0 < rows; r0 += rc) p.push_back({z0, 1, r0, std::min(rc, rows - r0)});
    return p;
}

static void test_attention(const char* label, size_t B, size_t T, size_t H, size_t KV, size_t D, size_t cap, size_t qoff, bool pad, bool pack, size_t zc, size_t rc = 0, float pdrop = 0.f) {
    size_t S = qoff + T, G = H / KV; float scale = 1 / std::sqrt(float(D));
    // Attention dropout keyed like the golden mask (its values are checked in test_dropout).
    DropoutArgs drop{0, 0, 0, 0, 0, 1.f};
    if (pdrop > 0) { drop = g_golden.args; drop.module = 16; drop.threshold = (unsigned)(double(pdrop) * 4294967296.0); drop.scale = 1.f / (1.f - pdrop); }
    auto M = [&](size_t b, size_t h, size_t i, size_t j) { return dropout_factor(drop, (unsigned)((b * H + h) * T + i), (unsigned)j); };
    Mask mk{B, T, S, qoff, {}, {}};
    if (pad) { mk.kv.assign(B * S, 1); for (size_t b = 0; b < B; ++b) for (size_t j = 0; j < (b * 3 + 2) % (S / 3 + 1); ++j) mk.kv[b * S + (pack ? S - 1 - j : j)] = 0; }
    if (pack) { mk.seg.resize(B * S); for (size_t i = 0; i < B * S; ++i) mk.seg[i] = (i % S) * 3 / S; }
    auto q = randn(B * T * H * D), k = randn(B * cap * KV * D), v = randn(B * cap * KV * D), dout = randn(B * T * H * D);
    // reference forward / backward (CPU backend's loops, f64)
    std::vector<float> ro(B * T * H * D, 0), rl(B * T * H, 0), rdq(q.size(), 0), rdk(B * S * KV * D, 0), rdv(B * S * KV * D, 0);
    for (size_t b = 0; b < B; ++b) for (size_t i = 0; i < T; ++i) for (size_t h = 0; h < H; ++h) {
        size_t g = h / G; std::vector<double> sc(S); double mx = -INFINITY;
        for (size_t j = 0; j < S; ++j) { if (!mk.allows(b, i, j)) { sc[j] = -INFINITY; continue; } double d = 0; for (size_t e = 0; e < D; ++e) d += double(q[((b * T + i) * H + h) * D + e]) * k[((b * cap + j) * KV + g) * D + e]; sc[j] = d * scale; mx = std::max(mx, sc[j]); }
        if (mx == -INFINITY) continue;
        double den = 0; for (size_t j = 0; j < S; ++j) den += sc[j] == -INFINITY ? 0 : std::exp(sc[j] - mx);
        for (size_t j = 0; j < S; ++j) { if (sc[j] == -INFINITY) continue; double p = std::exp(sc[j] - mx) / den * M(b, h, i, j); for (size_t e = 0; e < D; ++e) ro[((b * T + i) * H + h) * D + e] += p * v[((b * cap + j) * KV + g) * D + e]; }
        rl[(b * T + i) * H + h] = mx + std::log(den);
    }
    // forward through the kernels, mirroring ops/attention.rs
    std::vector<float> qh(B * H * T * D), kh(B * KV * S * D), vh(B * KV * S * D), oh(B * H * T * D), lse(B * T * H, NAN), out(B * T * H * D, NAN);
    launch(g1(qh.size()), B256, 0, [&] { attn_to_heads_f32(q.data(), qh.data(), B, T, T, H, D); });
    launch(g1(kh.size()), B256, 0, [&] { attn_to_heads_f32(k.data(), kh.data(), B, S, cap, KV, D); });
    launch(g1(vh.size()), B256, 0, [&] { attn_to_heads_f32(v.data(), vh.data(), B, S, cap, KV, D); });
    size_t rows = G * T, Z = B * KV; const auto P = pieces(Z, rows, zc, rc); std::vector<float> scores(zc * rows * S);
    const unsigned char* kvp = mk.kv.empty() ? nullptr : mk.kv.data(); const unsigned* sgp = mk.seg.empty() ? nullptr : mk.seg.data();
    for (const Piece& p : P) { const long long row0 = (long long)(p.z0 * rows + p.r0);
        bgemm(p.nz, p.nr, S, D, qh.data() + row0 * D, false, kh.data() + p.z0 * S * D, true, scores.data(), scale);
        launch(dim3{(unsigned)(p.nz * p.nr), 1, 1}, B256, 0, [&] { attn_softmax_fwd_f32(scores.data(), lse.data(), kvp, sgp, row0, G, T, S, H, KV, qoff, drop); });
        bgemm(p.nz, p.nr, D, S, scores.data(), false, vh.data() + p.z0 * S * D, false, oh.data() + row0 * D, 1);
    }
    launch(g1(out.size()), B256, 0, [&] { attn_from_heads_f32(oh.data(), out.data(), B, T, H, D); });
    check(std::string("attention fwd out ") + label, out, ro, 1e-5); check(std::string("attention fwd lse ") + label, lse, rl, 1e-5);
    if (cap != S) return;
    // reference backward
    for (size_t b = 0; b < B; ++b) for (size_t i = 0; i < T; ++i) for (size_t h = 0; h < H; ++h) {
        size_t g = h / G, qi = ((b * T + i) * H + h) * D; double di = 0; for (size_t e = 0; e < D; ++e) di += double(dout[qi + e]) * ro[qi + e];
        for (size_t j = 0; j < S; ++j) { if (!mk.allows(b, i, j)) continue; size_t kj = ((b * S + j) * KV + g) * D; double d = 0, dp = 0;
            for (size_t e = 0; e < D; ++e) { d += double(q[qi + e]) * k[kj + e]; dp += double(dout[qi + e]) * v[kj + e]; }
            double p = std::exp(d * scale - rl[(b * T + i) * H + h]), m = M(b, h, i, j); double ds = p * (dp * m - di) * scale;
            for (size_t e = 0; e < D; ++e) { rdq[qi + e] += ds * k[kj + e]; rdk[kj + e] += ds * q[qi + e]; rdv[kj + e] += p * m * dout[qi + e]; } }
    }
    std::vector<float> oh2(oh.size()), doh(oh.size()), delta(B * H * T, NAN), dqh(qh.size(), NAN), dkh(kh.size(), NAN), dvh(vh.size(), NAN), dp(zc * rows * S);
    launch(g1(ro.size()), B256, 0, [&] { attn_to_heads_f32(ro.data(), oh2.data(), B, T, T, H, D); });
    launch(g1(dout.size()), B256, 0, [&] { attn_to_heads_f32(dout.data(), doh.data(), B, T, T, H, D); });
    launch(dim3{(unsigned)((B * H * T * 32 + 255) / 256), 1, 1}, B256, 0, [&] { attn_row_dot_f32(doh.data(), oh2.data(), delta.data(), (long long)(B * H * T), D); });
    for (const Piece& p : P) { const long long row0 = (long long)(p.z0 * rows + p.r0); const bool add = p.r0 > 0;
        bgemm(p.nz, p.nr, S, D, qh.data() + row0 * D, false, kh.data() + p.z0 * S * D, true, scores.data(), scale);
        bgemm(p.nz, p.nr, S, D, doh.data() + row0 * D, false, vh.data() + p.z0 * S * D, true, dp.data(), 1);
        launch(dim3{(unsigned)(p.nz * p.nr), 1, 1}, B256, 0, [&] { attn_softmax_bwd_f32(scores.data(), dp.data(), rl.data(), delta.data(), kvp, sgp, row0, G, T, S, H, KV, qoff, scale, drop); });
        bgemm(p.nz, S, D, p.nr, scores.data(), true, doh.data() + row0 * D, false, dvh.data() + p.z0 * S * D, 1, add);
        bgemm(p.nz, S, D, p.nr, dp.data(), true, qh.data() + row0 * D, false, dkh.data() + p.z0 * S * D, 1, add);
        bgemm(p.nz, p.nr, D, S, dp.data(), false, kh.data() + p.z0 * S * D, false, dqh.data() + row0 * D, 1);
    }
    std::vector<float> dq(q.size()), dk(rdk.size()), dv(rdv.size());
    launch(g1(dq.size()), B256, 0, [&] { attn_from_heads_f32(dqh.data(), dq.data(), B, T, H, D); });
    launch(g1(dk.size()), B256, 0, [&] { attn_from_heads_f32(dkh.data(), dk.data(), B, S, KV, D); });
    launch(g1(dv.size()), B256, 0, [&] { attn_from_heads_f32(dvh.data(), dv.data(), B, S, KV, D); });
    check(std::string("attention bwd dq ") + label, dq, rdq, 1e-5); check(std::string("attention bwd dk ") + label, dk, rdk, 1e-5); check(std::string("attention bwd dv ") + label, dv, rdv, 1e-5);
}

static void test_cross_entropy() {
    size_t M = 6, V = 3001; float s = 0.25f;
    auto logits = randn(M * V, 2.f); logits[1 * V + 10] = 50; logits[1 * V + 2000] = 50; // tie: first index wins
    std::vector<int> tg = {5, 10, 3000, 0, 1234, 2000}; std::vector<float> loss(M, NAN), wloss(M), wgrad(M * V); std::vector<int> cor(M, -1), wcor(M);
    for (size_t r = 0; r < M; ++r) { const float* lr = &logits[r * V]; double mx = -INFINITY; size_t am = 0; for (size_t j = 0; j < V; ++j) if (lr[j] > mx) { mx = lr[j]; am = j; }
        double sum = 0; for (size_t j = 0; j < V; ++j) sum += std::exp(lr[j] - mx); double lse = mx + std::log(sum);
        wloss[r] = lse - lr[tg[r]]; wcor[r] = am == (size_t)tg[r];
        for (size_t j = 0; j < V; ++j) wgrad[r * V + j] = s * std::exp(lr[j] - lse) - (j == (size_t)tg[r] ? s : 0); }
    auto lg = logits;
    launch(dim3{(unsigned)M, 1, 1}, dim3{1024, 1, 1}, 0, [&] { cross_entropy_fwd_bwd_f32(lg.data(), tg.data(), loss.data(), cor.data(), (int)V, s, 1); });
    check("cross_entropy loss", loss, wloss, 1e-5); check("cross_entropy dlogits", lg, wgrad, 1e-5);
    std::vector<float> cf(cor.begin(), cor.end()), wcf(wcor.begin(), wcor.end()); check("cross_entropy correct (argmax, ties)", cf, wcf, 0);
    auto lg2 = logits; std::fill(loss.begin(), loss.end(), NAN);
    launch(dim3{(unsigned)M, 1, 1}, dim3{1024, 1, 1}, 0, [&] { cross_entropy_fwd_bwd_f32(lg2.data(), tg.data(), loss.data(), cor.data(), (int)V, 0, 0); });
    check("cross_entropy loss (no grad)", loss, wloss, 1e-5); check("cross_entropy logits untouched (no grad)", lg2, logits, 0);
}

static void test_adamw_reduce() {
    size_t n = 10007; auto p = randn(n, 0.05f), g = randn(n, 1e-3f), m = randn(n, 1e-4f), v = randn(n, 1e-4f); for (auto& x : v) x *= x;
    float decay = 1 - 1e-4f * 0.1f, omb1 = 0.1f, b2 = 0.95f, omb2 = 0.05f, bc2 = std::sqrt(1 - std::pow(0.95, 7)), eps = 1e-8f, nss = -1e-4 / (1 - std::pow(0.9, 7)), gs = 0.37f;
    auto pp = p, mm = m, vv = v; std::vector<float> wp(n), wm(n), wv(n);
    for (size_t i = 0; i < n; ++i) { float gg = g[i] * gs; float pv = p[i] * decay; float mv = m[i] + omb1 * (gg - m[i]); float vq = v[i] * b2 + omb2 * gg * gg; float den = std::sqrt(vq) / bc2 + eps; wp[i] = pv + nss * mv / den; wm[i] = mv; wv[i] = vq; }
    launch(g1(n), B256, 0, [&] { adamw_step_f32(pp.data(), g.data(), mm.data(), vv.data(), (long long)n, 1, decay, omb1, b2, omb2, bc2, eps, nss, gs); });
    check("adamw_step_f32 param (exact)", pp, wp, 0); check("adamw m (exact)", mm, wm, 0); check("adamw v (exact)", vv, wv, 0);
    std::vector<bf16_t> p16(n); std::vector<float> p16f(n), wp16(n); for (size_t i = 0; i < n; ++i) { p16[i] = f32_to_bf16(p[i]); }
    mm = m; vv = v;
    launch(g1(n), B256, 0, [&] { adamw_step_bf16(p16.data(), g.data(), mm.data(), vv.data(), (long long)n, 0, 1, omb1, b2, omb2, bc2, eps, nss, gs); });
    for (size_t i = 0; i < n; ++i) { float gg = g[i] * gs; float pv = bf16_ref(p[i]); float mv = m[i] + omb1 * (gg - m[i]); float vq = v[i] * b2 + omb2 * gg * gg; float den = std::sqrt(vq) / bc2 + eps; wp16[i] = bf16_ref(pv + nss * mv / den); p16f[i] = bf16_to_f32(p16[i]); }
    check("adamw_step_bf16 param, no decay (exact)", p16f, wp16, 0);
    auto x = randn(123457); size_t blocks = std::min<size_t>(1024, (x.size() + 1023) / 1024); std::vector<double> part(blocks, NAN);
    launch(dim3{(unsigned)blocks, 1, 1}, B256, 0, [&] { sum_squares_f32(x.data(), (long long)x.size(), part.data()); });
    double got = 0, want = 0; for (double d : part) got += d; for (float f : x) want += double(f) * f;
    check("sum_squares_f32", {float(got)}, {float(want)}, 1e-7);
    size_t R = 41, C = 300; auto xm = randn(R * C), o = randn(C); auto wo = o;
    launch(dim3{(unsigned)((C + 255) / 256), 1, 1}, B256, 0, [&] { col_sum_add_f32(xm.data(), o.data(), (int)R, (int)C); });
    for (size_t c = 0; c < C; ++c) { double a = 0; for (size_t r = 0; r < R; ++r) a += xm[r * C + c]; wo[c] += a; }
    check("col_sum_add_f32", o, wo, 1e-6);
}

int main(int argc, char** argv) {
    if (argc != 2) { fprintf(stderr, "usage: harness kernels/dropout_golden.txt\n"); return 2; }
    load_golden(argv[1]);
    test_copy(); test_elementwise(); test_embedding();
    rms_case<float>("(f32 w, 37x200)", 37, 200, false); rms_case<bf16_t>("(bf16 w, 1100x64: strided rows)", 1100, 64, true); rms_case<float>("(f32 w, 3x3584)", 3, 3584, false);
    test_rope(); test_dropout(); test_lora();
    test_attention("(causal, GQA 4/2)", 2, 7, 4, 2, 16, 7, 0, false, false, 1);
    test_attention("(padding, chunk 3)", 3, 9, 6, 2, 8, 9, 0, true, false, 3);
    test_attention("(packing + padding, all z)", 2, 12, 4, 4, 8, 12, 0, true, true, 8);
    test_attention("(row blocks of 5 inside a slice, packing + padding)", 2, 12, 4, 2, 8, 12, 0, true, true, 1, 5);
    test_attention("(dropout 0.3, row blocks of 7, padding)", 2, 12, 4, 2, 8, 12, 0, true, false, 1, 7, 0.3f);
    test_attention("(dropout 0.3, all z, packing)", 2, 12, 4, 4, 8, 12, 0, false, true, 8, 0, 0.3f);
    test_attention("(cache: offset 5, cap 20)", 2, 4, 4, 2, 8, 20, 5, true, false, 2);
    test_attention("(decode T=1, offset 9)", 1, 1, 4, 1, 8, 16, 9, false, false, 1);
    test_cross_entropy(); test_adamw_reduce();
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
