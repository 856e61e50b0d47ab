//! Dropout masks from a counter-based random number generator: Philox4x32-10 (Salmon, Moraes,
//! Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11), the generator cuRAND and
//! PyTorch's CUDA dropout use.
//!
//! A counter-based generator maps (key, counter) to random bits with no state in between, so any
//! element of a mask can be drawn on its own, in any order, on any device: the CUDA kernels that
//! apply a mask draw it on the fly (`kernels/common.cuh`, `philox4x32_10`) with the same
//! arithmetic as this file, and the CPU backend draws it here. Nothing stores a mask.
//!
//! Element `(row, col)` of the mask named by a [`MaskKey`] `{seed, layer, module}` is decided by
//! word `col % 4` of `philox4x32_10(counter = [col / 4, row, layer, module], key = seed)`:
//! dropped when the word is below `⌊p · 2³²⌋` (an integer comparison, so both devices agree bit
//! for bit), otherwise kept and scaled by `1/(1−p)` (inverted dropout, as `torch.nn.Dropout`).
//! The trainer draws a fresh `seed` per micro-batch from its checkpointed stream, so the key
//! covers (run seed, step, micro-batch); a recompute under gradient checkpointing and a resumed
//! run draw the very same masks.
//!
//! This module must not know about tensors or backends: it is arithmetic on integers.

/// Philox multipliers and Weyl key increments (Salmon et al. 2011, table 2; Random123 `philox.h`).
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds: four 32-bit random words for one 128-bit counter and 64-bit key.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        let (hi0, lo0, hi1, lo1) = ((p0 >> 32) as u32, p0 as u32, (p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Which mask: one per (micro-batch seed, layer, module). Module ids: the seven LoRA linears use
/// their projection index 0–6 (q, k, v, o, gate, up, down); attention dropout uses
/// [`MODULE_ATTENTION`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaskKey {
    pub seed: u64,
    pub layer: u32,
    pub module: u32,
}

/// Module id of the attention-probability dropout mask (distinct from every LoRA module).
pub const MODULE_ATTENTION: u32 = 16;

/// A dropout mask with its probability: everything needed to decide any element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub key: MaskKey,
    /// Drop probability, in [0, 1).
    pub p: f32,
}

impl Dropout {
    /// An element is dropped when its random word is below this: `⌊p · 2³²⌋`.
    pub fn threshold(&self) -> u32 {
        (f64::from(self.p.clamp(0.0, 1.0)) * 4_294_967_296.0).min(u32::MAX as f64) as u32
    }

    /// The factor of a kept element, `1/(1−p)` rounded to f32 once (both devices use this value).
    pub fn scale(&self) -> f32 {
        1.0 / (1.0 - self.p)
    }

    /// The Philox key words of [`MaskKey::seed`] (low word first).
    pub fn key_words(&self) -> [u32; 2] {
        [self.key.seed as u32, (self.key.seed >> 32) as u32]
    }

    /// The four random words deciding columns `4·group … 4·group + 3` of `row`.
    pub fn words(&self, row: u32, group: u32) -> [u32; 4] {
        philox4x32_10([group, row, self.key.layer, self.key.module], self.key_words())
    }

    /// Whether element `(row, col)` is kept.
    pub fn keep(&self, row: u32, col: u32) -> bool {
        self.words(row, col / 4)[(col % 4) as usize] >= self.threshold()
    }

    /// The mask value of element `(row, col)`: `0` or `1/(1−p)`.
    pub fn factor(&self, row: u32, col: u32) -> f32 {
        if self.keep(row, col) {
            self.scale()
        } else {
            0.0
        }
    }

    /// Writes the mask values of columns `0 … out.len()` of `row` into `out` (one Philox call per
    /// four columns).
    pub fn fill_row(&self, row: u32, out: &mut [f32]) {
        let (threshold, scale) = (self.threshold(), self.scale());
        for (group, chunk) in out.chunks_mut(4).enumerate() {
            let words = self.words(row, group as u32);
            for (o, w) in chunk.iter_mut().zip(words) {
                *o = if w >= threshold { scale } else { 0.0 };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Random123 (`kat_vectors`, philox4x32_10).
    #[test]
    fn matches_the_random123_known_answers() {
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]);
        assert_eq!(
            philox4x32_10([0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344], [0xa409_3822, 0x299f_31d0]),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    /// The mask of `kernels/dropout_golden.txt`, which the CUDA kernels' host emulation checks too:
    /// CPU and device draw the same masks because both reproduce this file bit for bit.
    #[test]
    fn golden_mask_is_reproduced() {
        let text = include_str!("../../../kernels/dropout_golden.txt");
        let mut lines = text.lines().filter(|l| !l.starts_with('#'));
        let header: std::collections::HashMap<&str, &str> =
            lines.next().expect("header line").split_whitespace().filter_map(|kv| kv.split_once('=')).collect();
        let hex = |k: &str| u64::from_str_radix(header[k].trim_start_matches("0x"), 16).expect("hex");
        let num = |k: &str| header[k].parse::<u64>().expect("number");
        let d = Dropout {
            key: MaskKey { seed: hex("seed"), layer: num("layer") as u32, module: num("module") as u32 },
            p: header["p"].parse().expect("p"),
        };
        assert_eq!(u64::from(d.threshold()), num("threshold"));
        assert_eq!(u64::from(d.scale().to_bits()), hex("scale_bits"));
        let rows: Vec<&str> = lines.collect();
        assert_eq!(rows.len() as u64, num("rows"));
        for (r, row) in rows.iter().enumerate() {
            assert_eq!(row.len() as u64, num("cols"));
            for (c, bit) in row.chars().enumerate() {
                assert_eq!(d.keep(r as u32, c as u32), bit == '1', "row {r} column {c}");
            }
        }
    }

    fn dropout(seed: u64, p: f32) -> Dropout {
        Dropout { key: MaskKey { seed, layer: 3, module: 5 }, p }
    }

    #[test]
    fn kept_fraction_is_one_minus_p_within_sampling_error() {
        for p in [0.05f32, 0.1, 0.5] {
            let d = dropout(42, p);
            let (rows, cols) = (300u32, 333u32);
            let kept = (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).filter(|&(r, c)| d.keep(r, c)).count() as f64;
            let n = f64::from(rows * cols);
            let sigma = (n * f64::from(p) * (1.0 - f64::from(p))).sqrt();
            // Five standard deviations: a correct generator fails this about once in 3.5 million runs.
            assert!((kept - n * (1.0 - f64::from(p))).abs() < 5.0 * sigma, "p {p}: kept {kept} of {n}");
        }
    }

    #[test]
    fn fill_row_agrees_with_factor_and_keys_give_different_masks() {
        let d = dropout(7, 0.3);
        let mut row = vec![f32::NAN; 45];
        d.fill_row(11, &mut row);
        for (c, v) in row.iter().enumerate() {
            assert_eq!(v.to_bits(), d.factor(11, c as u32).to_bits());
            assert!(*v == 0.0 || *v == d.scale());
        }
        let mask = |d: Dropout| (0..64).map(|c| d.keep(2, c)).collect::<Vec<_>>();
        let base = mask(d);
        for other in
            [dropout(8, 0.3), Dropout { key: MaskKey { layer: 4, ..d.key }, ..d }, Dropout { key: MaskKey { module: 6, ..d.key }, ..d }]
        {
            assert_ne!(mask(other), base, "{other:?}");
        }
        assert_ne!((0..64).map(|c| d.keep(3, c)).collect::<Vec<_>>(), base);
    }

    #[test]
    fn zero_probability_keeps_everything_unscaled() {
        let d = dropout(1, 0.0);
        assert_eq!(d.threshold(), 0);
        assert_eq!(d.scale(), 1.0);
        assert!((0..1000).all(|c| d.factor(0, c) == 1.0));
    }
}
