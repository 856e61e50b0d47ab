//! Choosing the next token from logits, with the semantics of transformers' `generate`:
//! repetition penalty on the raw logits (Keskar et al. 2019: positive logits of seen tokens are
//! divided by the penalty, negative ones multiplied), then — when sampling — temperature,
//! top-k, top-p and min-p in that order (transformers' `_get_logits_processor` order), then a
//! draw from the softmax. Temperature 0 means greedy (argmax, first index on ties, as
//! `torch.argmax`). Works on host f32 logits; must not touch the model or backend.

use qtrain_core::rng::Rng;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SamplingParams {
    /// 0 → greedy.
    pub temperature: f32,
    /// 0 → off.
    pub top_k: usize,
    /// 1 → off.
    pub top_p: f32,
    /// 0 → off.
    pub min_p: f32,
    /// 1 → off.
    pub repetition_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0 }
    }
}

impl SamplingParams {
    /// Refuse values transformers refuses too.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(format!("temperature must be ≥ 0, got {}", self.temperature));
        }
        if self.top_p.is_nan() || self.top_p <= 0.0 || self.top_p > 1.0 {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if self.repetition_penalty.is_nan() || self.repetition_penalty <= 0.0 {
            return Err(format!("repetition_penalty must be > 0, got {}", self.repetition_penalty));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// Reads as a log line: `greedy` or `temperature 0.7, top_k 20, top_p 0.8`, naming only the
/// filters that are on (and a repetition penalty other than 1).
impl std::fmt::Display for SamplingParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = vec![];
        if self.is_greedy() {
            parts.push("greedy".to_string());
        } else {
            parts.push(format!("temperature {}", self.temperature));
            if self.top_k != 0 {
                parts.push(format!("top_k {}", self.top_k));
            }
            if self.top_p != 1.0 {
                parts.push(format!("top_p {}", self.top_p));
            }
            if self.min_p != 0.0 {
                parts.push(format!("min_p {}", self.min_p));
            }
        }
        if self.repetition_penalty != 1.0 {
            parts.push(format!("repetition_penalty {}", self.repetition_penalty));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Stateful sampler (it owns the random stream, so a seed reproduces a whole generation).
#[derive(Clone, Debug)]
pub struct Sampler {
    pub params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams, seed: u64) -> Self {
        Sampler { params, rng: Rng::new(seed) }
    }

    /// Pick the next token. `logits` `[V]` is modified in place; `context` holds every token
    /// so far (prompt and generated), for the repetition penalty.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> u32 {
        apply_repetition_penalty(logits, context, self.params.repetition_penalty);
        if self.params.is_greedy() {
            return argmax(logits) as u32;
        }
        let t = self.params.temperature;
        if t != 1.0 {
            logits.iter_mut().for_each(|x| *x /= t);
        }
        apply_top_k(logits, self.params.top_k);
        apply_top_p(logits, self.params.top_p);
        apply_min_p(logits, self.params.min_p);
        let probs = softmax(logits);
        let u = self.rng.next_f64();
        let mut acc = 0.0f64;
        let mut last_nonzero = 0;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                acc += p;
                last_nonzero = i;
                if u < acc {
                    return i as u32;
                }
            }
        }
        last_nonzero as u32 // rounding left u just above the total
    }
}

/// Index of the first maximum.
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// HF `RepetitionPenaltyLogitsProcessor`.
pub fn apply_repetition_penalty(logits: &mut [f32], context: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = vec![false; logits.len()];
    for &id in context {
        let id = id as usize;
        if id < logits.len() && !seen[id] {
            seen[id] = true;
            let x = &mut logits[id];
            *x = if *x < 0.0 { *x * penalty } else { *x / penalty };
        }
    }
}

/// HF `TopKLogitsWarper`: remove every logit strictly below the k-th largest.
pub fn apply_top_k(logits: &mut [f32], k: usize) {
    if k == 0 || k >= logits.len() {
        return;
    }
    let mut sorted: Vec<f32> = logits.to_vec();
    sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let kth = sorted[k - 1];
    logits.iter_mut().filter(|x| **x < kth).for_each(|x| *x = f32::NEG_INFINITY);
}

/// HF `TopPLogitsWarper`: sort ascending, remove tokens whose cumulative probability is
/// ≤ 1 − top_p, always keeping the most likely token.
pub fn apply_top_p(logits: &mut [f32], top_p: f32) {
    if top_p >= 1.0 {
        return;
    }
    let probs = softmax(logits);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Stable ascending sort, as torch.sort(descending=False).
    order.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]));
    let mut cum = 0.0f64;
    let threshold = 1.0 - top_p as f64;
    let last = order.len() - 1;
    for (rank, &i) in order.iter().enumerate() {
        cum += probs[i];
        if cum <= threshold && rank != last {
            logits[i] = f32::NEG_INFINITY;
        }
    }
}

/// HF `MinPLogitsWarper`: remove tokens whose probability is below `min_p` times the top one.
pub fn apply_min_p(logits: &mut [f32], min_p: f32) {
    if min_p <= 0.0 {
        return;
    }
    let probs = softmax(logits);
    let top = probs.iter().cloned().fold(0.0, f64::max);
    for (x, p) in logits.iter_mut().zip(&probs) {
        if *p < min_p as f64 * top {
            *x = f32::NEG_INFINITY;
        }
    }
}

/// Softmax in f64 (removed tokens at −∞ get probability 0).
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits.iter().map(|&x| ((x as f64) - max).exp()).collect();
    let z: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / z).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_params_read_as_words() {
        assert_eq!(SamplingParams::default().to_string(), "greedy");
        let p = SamplingParams { temperature: 0.7, top_k: 20, top_p: 0.8, min_p: 0.0, repetition_penalty: 1.05 };
        assert_eq!(p.to_string(), "temperature 0.7, top_k 20, top_p 0.8, repetition_penalty 1.05");
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_once_per_token() {
        let mut l = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut l, &[0, 1, 0, 0], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn top_k_keeps_ties_at_the_threshold() {
        let mut l = vec![1.0, 3.0, 2.0, 2.0, 0.5];
        apply_top_k(&mut l, 2);
        assert_eq!(l, vec![f32::NEG_INFINITY, 3.0, 2.0, 2.0, f32::NEG_INFINITY]);
    }

    #[test]
    fn top_p_matches_hf_cumulative_rule() {
        // probs ≈ [0.643, 0.237, 0.087, 0.032]; ascending cum: 0.032, 0.119, 0.356, 1.0.
        let mut l = vec![3.0, 2.0, 1.0, 0.0];
        apply_top_p(&mut l, 0.7); // remove cum ≤ 0.3 → the two least likely
        assert_eq!(l, vec![3.0, 2.0, f32::NEG_INFINITY, f32::NEG_INFINITY]);
        let mut l = vec![3.0, 2.0, 1.0, 0.0];
        apply_top_p(&mut l, 0.01); // still keeps the top token
        assert_eq!(l.iter().filter(|x| x.is_finite()).count(), 1);
        assert_eq!(l[0], 3.0);
    }

    #[test]
    fn min_p_scales_with_the_top_probability() {
        let mut l = vec![3.0, 2.0, 1.0, 0.0];
        apply_min_p(&mut l, 0.2); // p/ptop = [1, 0.37, 0.135, 0.05]
        assert_eq!(l, vec![3.0, 2.0, f32::NEG_INFINITY, f32::NEG_INFINITY]);
    }

    #[test]
    fn greedy_is_argmax_and_sampling_follows_the_distribution() {
        let mut s = Sampler::new(SamplingParams::default(), 0);
        assert_eq!(s.sample(&mut [0.0, 5.0, 5.0, 1.0], &[]), 1);
        let params = SamplingParams { temperature: 1.0, ..Default::default() };
        let mut s = Sampler::new(params, 123);
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let n = 20_000;
        let ones = (0..n).filter(|_| s.sample(&mut logits.to_vec(), &[]) == 1).count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.015, "{frac}");
        // Same seed, same draws.
        let mut a = Sampler::new(params_t(0.7), 9);
        let mut b = Sampler::new(params_t(0.7), 9);
        let l: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        for _ in 0..20 {
            assert_eq!(a.sample(&mut l.clone(), &[]), b.sample(&mut l.clone(), &[]));
        }
    }

    fn params_t(t: f32) -> SamplingParams {
        SamplingParams { temperature: t, top_k: 20, top_p: 0.9, min_p: 0.05, repetition_penalty: 1.1 }
    }
}
