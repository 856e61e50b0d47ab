// Host emulation of the CUDA built-ins the qtrain kernels use: each block runs as blockDim.x
// std::threads with a std::barrier for __syncthreads and per-warp barriers for shuffles.
#pragma once
#include <algorithm>
#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<>* g_block_barrier = nullptr;
inline std::vector<std::unique_ptr<std::barrier<>>> g_warp_barriers;
inline double g_warp_buf[32][32];
inline std::mutex g_atomic_mutex;
inline std::vector<unsigned char> g_dyn_smem;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static

inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }

template <typename T>
inline T shfl_xor(T v, int o) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    auto& bar = *g_warp_barriers[warp];
    g_warp_buf[warp][lane] = 0;
    std::memcpy(&g_warp_buf[warp][lane], &v, sizeof(T));
    bar.arrive_and_wait();
    T r;
    std::memcpy(&r, &g_warp_buf[warp][lane ^ o], sizeof(T));
    bar.arrive_and_wait();
    return r;
}
inline float __shfl_xor_sync(unsigned, float v, int o) { return shfl_xor(v, o); }
inline double __shfl_xor_sync(unsigned, double v, int o) { return shfl_xor(v, o); }
inline int __shfl_xor_sync(unsigned, int v, int o) { return shfl_xor(v, o); }

inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
#include <math.h>
inline float atomicAdd(float* p, float v) { std::lock_guard<std::mutex> g(g_atomic_mutex); float o = *p; *p = o + v; return o; }

// Runs `kernel` over grid × block: blockDim.x worker threads (created once per launch) execute
// the blocks one after another; a thread that returns early simply waits for the next block.
template <typename F>
void launch(dim3 grid, dim3 block, size_t smem, F kernel) {
    if (block.x % 32 != 0) { fprintf(stderr, "block %u not a multiple of 32\n", block.x); abort(); }
    gridDim = grid; blockDim = block;
    g_dyn_smem.assign(smem + 16, 0xFF);
    std::barrier<> bb(block.x), end(block.x);
    g_block_barrier = &bb;
    g_warp_barriers.clear();
    for (unsigned w = 0; w < block.x / 32; ++w) g_warp_barriers.emplace_back(std::make_unique<std::barrier<>>(32));
    std::vector<std::thread> ts;
    ts.reserve(block.x);
    for (unsigned t = 0; t < block.x; ++t) {
        ts.emplace_back([&, t] {
            for (unsigned bz = 0; bz < grid.z; ++bz)
            for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                threadIdx = dim3{t, 0, 0};
                blockIdx = dim3{bx, by, bz};
                if (t == 0) std::fill(g_dyn_smem.begin(), g_dyn_smem.end(), 0xFF);
                end.arrive_and_wait();
                kernel();
                end.arrive_and_wait();
            }
        });
    }
    for (auto& t : ts) t.join();
}
