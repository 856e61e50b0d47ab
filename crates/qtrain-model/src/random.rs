//! Fast random weights for benchmarks at published shapes: billions of values in seconds.
//! Must not be used where the values must match transformers' initialisation (the embedded
//! model and the tests use the sequential normal draw in [`crate::QwenModel::random`]).

use half::bf16;
use rayon::prelude::*;

/// Values per independent stream: large enough to amortise the seeding, small enough to
/// spread over threads.
const CHUNK: usize = 1 << 16;

/// `n` bf16 values with mean 0 and standard deviation `std`, each the sum of four 16-bit
/// uniforms (Irwin–Hall with 4 terms: variance 4/12 of the unit range). Deterministic for
/// `seed`; chunk `i` draws from its own splitmix64 stream.
pub fn bf16_normalish(n: usize, std: f32, seed: u64) -> Vec<bf16> {
    // Sum of 4 uniforms on [0, 65536) has mean 2·65536 and std 65536·√(4/12).
    let scale = std / (65536.0 * (4.0f32 / 12.0).sqrt());
    let mut out = vec![bf16::ZERO; n];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, chunk)| {
        let mut state = seed ^ (i as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        for v in chunk.iter_mut() {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let sum = (z & 0xffff) + ((z >> 16) & 0xffff) + ((z >> 32) & 0xffff) + (z >> 48);
            *v = bf16::from_f32((sum as f32 - 131_072.0) * scale);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_and_determinism() {
        let a = bf16_normalish(1 << 18, 0.02, 7);
        assert_eq!(a, bf16_normalish(1 << 18, 0.02, 7));
        assert_ne!(a, bf16_normalish(1 << 18, 0.02, 8));
        let x: Vec<f64> = a.iter().map(|v| v.to_f64()).collect();
        let mean = x.iter().sum::<f64>() / x.len() as f64;
        let std = (x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / x.len() as f64).sqrt();
        assert!(mean.abs() < 2e-4, "mean {mean}");
        assert!((std - 0.02).abs() < 2e-4, "std {std}");
    }
}
