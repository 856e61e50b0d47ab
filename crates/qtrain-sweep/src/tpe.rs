//! Tree-structured Parzen Estimator (Bergstra, Bardenet, Bengio & Kégl, "Algorithms for
//! Hyper-Parameter Optimization", NeurIPS 2011), following Optuna 5.0's `TPESampler` with
//! `multivariate=False` (independent TPE, Optuna's default before 5.0) and its other defaults
//! (`prior_weight=1.0`, `consider_magic_clip=True`, `consider_endpoints=False`,
//! `n_ei_candidates=24`, `gamma=default_gamma`, `weights=default_weights`). The maths is
//! Optuna's; the random streams are our own, so draws differ from Optuna's for the same seed.
//!
//! For trial number `n` with history `H`:
//! 1. If fewer than `n_startup_trials` trials of `H` are complete or pruned, the trial is drawn
//!    by the random sampler (the same draw the random sampler makes for that seed and trial).
//! 2. Otherwise the usable trials (complete + pruned; failed ones are excluded) are ranked best
//!    first by [`rank_for_sampling`]: complete trials by metric, direction-aware, then pruned
//!    trials by how far they got and their last intermediate value (Optuna's rule — a pruned
//!    trial counts, but below every complete one). The top `γ(N) = min(⌈0.1·N⌉, 25)` are "good"
//!    (they define `l(x)`), the rest "bad" (`g(x)`); both lists are put back in trial order.
//! 3. Each dimension is independent (independent TPE). In its internal coordinate (log space
//!    for log-scaled dimensions, see [`crate::space::Distribution::to_internal`]) each of
//!    `l` and `g` is a Parzen estimator: a mixture of Gaussians truncated to the dimension's
//!    range, one per observation, plus a prior component (mean at the centre, σ = the range).
//!    Bandwidths come from neighbour distances as in Optuna's `_ParzenEstimator`: each
//!    observation's σ is the larger gap to its sorted neighbours (range ends count as
//!    neighbours, except that the outermost observations use their inner gap), clipped to
//!    `[range / min(100, 1 + n_kernels), range]` ("magic clip"). Mixture weights are Optuna's
//!    `default_weights` (flat for the 25 newest observations, a linear ramp down for older ones),
//!    plus `prior_weight` for the prior, normalised.
//!    Integers are discretised Gaussians: the range is widened by ½ on each side and `k` has the
//!    mass of `[k-½, k+½]` (of `[ln(k-½), ln(k+½)]` in log space for `int:…:log`); samples are
//!    rounded. Choices are categorical (unordered, even when numeric), with Optuna 5's smoothed
//!    frequency: the observation kernels put `p/K + 1` on their choice and `p/K` on every other
//!    (normalised; `K` = observations + 1, `p = prior_weight`), the prior kernel is uniform, and
//!    the mixture weights are as above.
//! 4. `n_ei_candidates` values are drawn from `l` and the one with the largest `log l(x) − log g(x)`
//!    kept. Doing this per dimension maximises the sum of per-dimension log-ratios over the
//!    product of the candidate sets — which is what independent TPE (and Optuna) does.

use serde::{Deserialize, Serialize};

use qtrain_core::rng::Rng;

use crate::metric::Direction;
use crate::record::{rank_for_sampling, TrialRecord};
use crate::sampler::sample_random;
use crate::space::{Distribution, Params, SearchSpace};

/// Optuna's default number of random trials before TPE takes over.
pub const DEFAULT_N_STARTUP_TRIALS: usize = 10;
/// Candidates drawn from `l(x)` per dimension and trial.
pub const DEFAULT_N_EI_CANDIDATES: usize = 24;

/// TPE settings. `n_startup_trials: None` means [`default_n_startup_trials`] of the study's
/// `n_trials`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TpeConfig {
    pub n_startup_trials: Option<usize>,
    pub n_ei_candidates: usize,
    pub prior_weight: f64,
}

impl Default for TpeConfig {
    fn default() -> Self {
        TpeConfig { n_startup_trials: None, n_ei_candidates: DEFAULT_N_EI_CANDIDATES, prior_weight: 1.0 }
    }
}

impl TpeConfig {
    /// Random trials before TPE, for a study of `n_trials` trials.
    pub fn startup_trials(&self, n_trials: usize) -> usize {
        self.n_startup_trials.unwrap_or_else(|| default_n_startup_trials(n_trials))
    }
}

/// Optuna's 10 random startup trials, fewer for small budgets so that at least two thirds of
/// the trials are guided: `min(10, max(3, ⌈n_trials / 3⌉))` (20 trials → 7, 30 or more → 10).
/// Since the count depends on `n_trials`, resuming a study that has finished fewer than 10
/// trials with a different `n_trials` can change which of its early trials are random; pass
/// `n_startup_trials` explicitly to rule that out.
pub fn default_n_startup_trials(n_trials: usize) -> usize {
    DEFAULT_N_STARTUP_TRIALS.min(n_trials.div_ceil(3).max(3))
}

/// Optuna's `default_gamma`: the number of "good" trials among `n`, `min(⌈0.1·n⌉, 25)`.
pub fn gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// Optuna's `default_weights`: ones for `n < 25`; otherwise a ramp from `1/n` to 1 over the
/// `n - 25` oldest observations followed by 25 ones. Observations are in trial order.
pub fn default_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let m = n - 25;
    let start = 1.0 / n as f64;
    let mut w: Vec<f64> = (0..m).map(|i| if m == 1 { start } else { start + (1.0 - start) * i as f64 / (m - 1) as f64 }).collect();
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

/// The TPE sampler for one search space.
#[derive(Clone, Debug)]
pub struct TpeSampler {
    space: SearchSpace,
    n_startup_trials: usize,
    n_ei_candidates: usize,
    prior_weight: f64,
}

impl TpeSampler {
    pub fn new(space: &SearchSpace, config: &TpeConfig, n_trials: usize) -> TpeSampler {
        TpeSampler {
            space: space.clone(),
            n_startup_trials: config.startup_trials(n_trials),
            n_ei_candidates: config.n_ei_candidates.max(1),
            prior_weight: config.prior_weight,
        }
    }

    pub fn n_startup_trials(&self) -> usize {
        self.n_startup_trials
    }

    /// Draws one trial's parameters given the finished trials.
    pub fn propose(&self, rng: &mut Rng, history: &[TrialRecord], direction: Direction) -> Params {
        let ranked = rank_for_sampling(history, direction);
        if ranked.len() < self.n_startup_trials || ranked.is_empty() {
            let mut params = Params::new();
            for p in self.space.params() {
                params.insert(p.name.clone(), sample_random(&p.distribution, rng));
            }
            return params;
        }
        let n_below = gamma(ranked.len());
        let mut below = ranked[..n_below].to_vec();
        let mut above = ranked[n_below..].to_vec();
        below.sort_by_key(|r| r.trial);
        above.sort_by_key(|r| r.trial);

        let mut params = Params::new();
        for p in self.space.params() {
            let observations = |records: &[&TrialRecord]| -> Vec<f64> {
                records.iter().filter_map(|r| r.params.get(&p.name).and_then(|v| p.distribution.to_internal(v))).collect()
            };
            let l = Estimator::new(&p.distribution, &observations(&below), self.prior_weight);
            let g = Estimator::new(&p.distribution, &observations(&above), self.prior_weight);
            let mut best = (f64::NEG_INFINITY, None);
            for _ in 0..self.n_ei_candidates {
                let x = l.sample(rng);
                let score = l.log_pdf(x) - g.log_pdf(x);
                if best.1.is_none() || score > best.0 {
                    best = (score, Some(x));
                }
            }
            let x = best.1.expect("n_ei_candidates >= 1");
            params.insert(p.name.clone(), p.distribution.from_internal(x));
        }
        params
    }
}

/// One dimension's Parzen estimator (`l` or `g`).
#[derive(Clone, Debug)]
enum Estimator {
    Numeric(NumericParzen),
    /// Probabilities of each choice index.
    Categorical(Vec<f64>),
}

/// How samples of a numeric dimension snap back onto the dimension.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Snap {
    /// Continuous values (uniform, log-uniform).
    None,
    /// Integers `low..=high`; the density of `k` is the mass of `[k-½, k+½]`, or of
    /// `[ln(k-½), ln(k+½)]` for log integers (whose coordinate is `ln k`).
    Int { low: f64, high: f64, log: bool },
}

/// A mixture of truncated Gaussians on `[lo, hi]`; the prior component is the last one.
#[derive(Clone, Debug)]
struct NumericParzen {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    /// Normalised mixture weights and their cumulative sums (for sampling) and logarithms.
    cum_weights: Vec<f64>,
    log_weights: Vec<f64>,
    /// `ln(Φ((hi-μ)/σ) - Φ((lo-μ)/σ))` per component: the truncation normaliser.
    log_norm: Vec<f64>,
    lo: f64,
    hi: f64,
    snap: Snap,
}

impl Estimator {
    /// `observations` are internal coordinates in trial order.
    fn new(distribution: &Distribution, observations: &[f64], prior_weight: f64) -> Estimator {
        let mut weights = default_weights(observations.len());
        weights.push(prior_weight);
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        let (lo, hi, snap) = match *distribution {
            Distribution::Uniform { low, high } => (low, high, Snap::None),
            Distribution::LogUniform { low, high } => (low.ln(), high.ln(), Snap::None),
            Distribution::Int { low, high, log } => {
                let (lo, hi) = (low as f64 - 0.5, high as f64 + 0.5);
                let snap = Snap::Int { low: low as f64, high: high as f64, log };
                if log {
                    (lo.ln(), hi.ln(), snap)
                } else {
                    (lo, hi, snap)
                }
            }
            Distribution::Choice { ref choices } => {
                // Optuna 5's `_calculate_categorical_distributions`: each observation's kernel
                // puts `p/K + 1` on its choice and `p/K` on the others (K kernels), normalised.
                let n_choices = choices.len() as f64;
                let smooth = prior_weight / (observations.len() + 1) as f64;
                let mut probs = vec![weights[observations.len()] / n_choices; choices.len()];
                for (&obs, &w) in observations.iter().zip(&weights) {
                    for (c, p) in probs.iter_mut().enumerate() {
                        let hit = if obs as usize == c { 1.0 } else { 0.0 };
                        *p += w * (smooth + hit) / (n_choices * smooth + 1.0);
                    }
                }
                return Estimator::Categorical(probs);
            }
        };
        let range = hi - lo;
        let n = observations.len();
        // Neighbour bandwidths over the observations (Optuna's `compute_sigmas`, univariate).
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| observations[a].total_cmp(&observations[b]));
        let mut sorted = Vec::with_capacity(n + 2);
        sorted.push(lo);
        sorted.extend(order.iter().map(|&i| observations[i]));
        sorted.push(hi);
        let mut sorted_sigmas: Vec<f64> = (1..=n).map(|i| (sorted[i] - sorted[i - 1]).max(sorted[i + 1] - sorted[i])).collect();
        if n >= 2 {
            sorted_sigmas[0] = sorted[2] - sorted[1];
            sorted_sigmas[n - 1] = sorted[n] - sorted[n - 1];
        }
        let n_kernels = n + 1;
        let min_sigma = range / (1.0 + n_kernels as f64).min(100.0);
        let mut sigmas = vec![0.0; n];
        for (rank, &i) in order.iter().enumerate() {
            sigmas[i] = sorted_sigmas[rank].clamp(min_sigma, range);
        }
        let mut mus = observations.to_vec();
        mus.push(0.5 * (lo + hi));
        sigmas.push(range);
        let log_norm = mus.iter().zip(&sigmas).map(|(&m, &s)| log_gauss_mass((lo - m) / s, (hi - m) / s)).collect();
        let mut acc = 0.0;
        let cum_weights = weights
            .iter()
            .map(|w| {
                acc += w;
                acc
            })
            .collect();
        let log_weights = weights.iter().map(|w| w.ln()).collect();
        Estimator::Numeric(NumericParzen { mus, sigmas, cum_weights, log_weights, log_norm, lo, hi, snap })
    }

    /// One internal coordinate drawn from the mixture (snapped onto integers where needed).
    fn sample(&self, rng: &mut Rng) -> f64 {
        match self {
            Estimator::Categorical(probs) => pick(probs.iter().copied(), rng.next_f64()) as f64,
            Estimator::Numeric(p) => {
                let u = rng.next_f64() * p.cum_weights[p.mus.len() - 1];
                let k = p.cum_weights.partition_point(|&c| c <= u).min(p.mus.len() - 1);
                // Rejection from N(μ, σ): μ lies in [lo, hi] and σ <= hi - lo, so at least
                // Φ(1) - Φ(0) ≈ 34% of the mass is inside and 100 tries practically never fail.
                let mut x = p.mus[k].clamp(p.lo, p.hi);
                for _ in 0..100 {
                    let z = p.mus[k] + p.sigmas[k] * rng.normal();
                    if (p.lo..=p.hi).contains(&z) {
                        x = z;
                        break;
                    }
                }
                match p.snap {
                    Snap::None => x,
                    Snap::Int { low, high, log: false } => x.round().clamp(low, high),
                    Snap::Int { low, high, log: true } => x.exp().round().clamp(low, high).ln(),
                }
            }
        }
    }

    fn log_pdf(&self, x: f64) -> f64 {
        match self {
            Estimator::Categorical(probs) => probs[x as usize].ln(),
            Estimator::Numeric(p) => {
                let terms = (0..p.mus.len()).map(|k| {
                    let (mu, sigma) = (p.mus[k], p.sigmas[k]);
                    let log_density = match p.snap {
                        Snap::None => log_std_normal_pdf((x - mu) / sigma) - sigma.ln(),
                        Snap::Int { log: false, .. } => log_gauss_mass((x - 0.5 - mu) / sigma, (x + 0.5 - mu) / sigma),
                        Snap::Int { log: true, .. } => {
                            let k = x.exp().round();
                            log_gauss_mass(((k - 0.5).ln() - mu) / sigma, ((k + 0.5).ln() - mu) / sigma)
                        }
                    };
                    p.log_weights[k] + log_density - p.log_norm[k]
                });
                log_sum_exp(terms)
            }
        }
    }
}

/// The index whose cumulative probability first exceeds `u · total`.
fn pick(probs: impl Iterator<Item = f64> + Clone, u: f64) -> usize {
    let total: f64 = probs.clone().sum();
    let target = u * total;
    let mut acc = 0.0;
    let mut last = 0;
    for (i, p) in probs.enumerate() {
        acc += p;
        last = i;
        if target < acc {
            return i;
        }
    }
    last
}

fn log_sum_exp(terms: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = terms.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + terms.map(|t| (t - max).exp()).sum::<f64>().ln()
}

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

fn log_std_normal_pdf(z: f64) -> f64 {
    -0.5 * z * z - LN_SQRT_2PI
}

/// The standard normal CDF Φ.
fn ndtr(z: f64) -> f64 {
    0.5 * erfc(-z * std::f64::consts::FRAC_1_SQRT_2)
}

/// `ln(Φ(b) - Φ(a))` for `a <= b`, computed on the side of the tail the interval lies in so
/// that far-tail masses keep their relative precision (as Optuna's `_log_gauss_mass`); where
/// even that underflows, the Mills-ratio asymptote `φ(t)/|t|` of the nearer endpoint `t`.
fn log_gauss_mass(a: f64, b: f64) -> f64 {
    if b <= a {
        return f64::NEG_INFINITY;
    }
    let (mass, near, far) = if b <= 0.0 {
        (ndtr(b) - ndtr(a), b, a)
    } else if a >= 0.0 {
        (ndtr(-a) - ndtr(-b), a, b)
    } else {
        return (1.0 - ndtr(a) - ndtr(-b)).ln();
    };
    if mass > 0.0 && mass.is_finite() {
        return mass.ln();
    }
    let t = near.abs();
    if t < 1.0 {
        // Only reached for a vanishing interval: midpoint rule.
        return log_std_normal_pdf(0.5 * (a + b)) + (b - a).ln();
    }
    // ∫_t^u φ ≈ φ(t)/t · (1 - e^{-(u² - t²)/2}) for large t.
    let u = far.abs();
    log_std_normal_pdf(t) - t.ln() + (-(-(0.5 * (u - t) * (u + t))).exp_m1()).ln()
}

/// The complementary error function to about 1e-14 relative accuracy: the Maclaurin series of
/// erf for |x| < 2, the continued fraction `erfc x = e^{-x²}/√π · 1/(x + ½/(x + 1/(x + 3/2/(x + …))))`
/// (Abramowitz & Stegun 7.1.14) evaluated backwards for x >= 2, and `erfc(-x) = 2 - erfc(x)`.
fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        // erf x = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
        let x2 = x * x;
        let mut term = x;
        let mut sum = x;
        for n in 1..100 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        return 1.0 - sum * std::f64::consts::FRAC_2_SQRT_PI;
    }
    if x > 27.3 {
        return 0.0; // below f64's smallest subnormal
    }
    let mut f = x;
    for n in (1..=60).rev() {
        f = x + (n as f64 * 0.5) / f;
    }
    (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::ParamValue;

    #[test]
    fn erfc_matches_reference_values() {
        // Reference values from scipy.special.erfc.
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.4795001221869535),
            (1.0, 0.15729920705028513),
            (1.9, 0.007209570764742524),
            (2.0, 0.004677734981047266),
            (3.0, 2.209049699858544e-05),
            (5.0, 1.537_459_794_428_035e-12),
            (10.0, 2.088487583762545e-45),
            (-1.0, 1.8427007929497148),
        ] {
            let got = erfc(x);
            assert!((got - want).abs() <= 1e-13 * want, "erfc({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn log_gauss_mass_is_accurate_in_the_centre_and_the_tails() {
        assert!((log_gauss_mass(f64::NEG_INFINITY, f64::INFINITY)).abs() < 1e-15);
        assert!((log_gauss_mass(-1.0, 1.0) - 0.6826894921370859f64.ln()).abs() < 1e-12);
        // Φ(-10) - Φ(-11) and its mirror image: 7.619853024160527e-24 - 1.9106595744986e-28.
        let want = (7.619853024160527e-24f64 - 1.910659574498e-28).ln();
        assert!((log_gauss_mass(-11.0, -10.0) - want).abs() < 1e-9);
        assert!((log_gauss_mass(10.0, 11.0) - want).abs() < 1e-9);
        // Beyond underflow the asymptote is finite and decreasing.
        let far = log_gauss_mass(60.0, 61.0);
        assert!(far.is_finite() && far < log_gauss_mass(50.0, 51.0));
        assert!((log_gauss_mass(60.0, 61.0) - (log_std_normal_pdf(60.0) - 60f64.ln())).abs() < 1e-3);
    }

    #[test]
    fn gamma_and_weights_follow_optuna() {
        assert_eq!([1, 9, 10, 11, 100, 250, 1000].map(gamma), [1, 1, 1, 2, 10, 25, 25]);
        assert_eq!(default_weights(3), vec![1.0; 3]);
        let w = default_weights(30);
        assert_eq!(w.len(), 30);
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-15 && w[4] == 1.0 && w[29] == 1.0 && w[1] < w[2]);
        assert_eq!([1, 12, 20, 30, 100].map(default_n_startup_trials), [3, 4, 7, 10, 10]);
    }

    /// The mixture is a density: it integrates to 1 over the range (continuous) or sums to 1
    /// over the integers (discrete), and the categorical one is a distribution too.
    #[test]
    fn parzen_estimators_are_normalised() {
        let cont = Estimator::new(&Distribution::LogUniform { low: 1e-5, high: 1e-2 }, &[-9.0, -8.5, -8.4, -6.0], 1.0);
        let (lo, hi) = (1e-5f64.ln(), 1e-2f64.ln());
        let n = 20_000;
        let h = (hi - lo) / n as f64;
        let integral: f64 = (0..n).map(|i| cont.log_pdf(lo + (i as f64 + 0.5) * h).exp() * h).sum();
        assert!((integral - 1.0).abs() < 1e-6, "{integral}");

        let disc = Estimator::new(&Distribution::Int { low: 3, high: 15, log: false }, &[4.0, 4.0, 9.0], 1.0);
        let total: f64 = (3..=15).map(|k| disc.log_pdf(k as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");

        let cat = Estimator::new(
            &Distribution::Choice { choices: vec![ParamValue::Int(1), ParamValue::Int(2), ParamValue::Int(3)] },
            &[0.0, 0.0, 2.0],
            1.0,
        );
        let Estimator::Categorical(p) = &cat else { panic!() };
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(p[0] > p[2] && p[2] > p[1], "{p:?}");
    }

    /// Samples follow the density: draws land where the mixture puts its mass.
    #[test]
    fn samples_concentrate_where_the_observations_are() {
        let d = Distribution::Uniform { low: 0.0, high: 1.0 };
        let est = Estimator::new(&d, &[0.30, 0.31, 0.32, 0.33, 0.34, 0.35], 1.0);
        let mut rng = Rng::new(5);
        let n = 4000;
        let near = (0..n).filter(|_| (0.2..0.45).contains(&est.sample(&mut rng))).count() as f64 / n as f64;
        // The sampled fraction matches the density's mass there (binomial sd ≈ 0.008), which the
        // magic clip (σ >= 1/8 with 7 kernels) keeps well below 1 but far above uniform's 0.25.
        let m = 10_000;
        let mass: f64 = (0..m).map(|i| est.log_pdf(0.2 + 0.25 * (i as f64 + 0.5) / m as f64).exp() * 0.25 / m as f64).sum();
        assert!((near - mass).abs() < 0.03 && mass > 0.5, "sampled {near}, density mass {mass}");
        let log_ints = Distribution::Int { low: 1, high: 64, log: true };
        let ints = Estimator::new(&log_ints, &[16f64.ln(), 16f64.ln()], 1.0);
        let total: f64 = (1..=64).map(|k| ints.log_pdf((k as f64).ln()).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        for _ in 0..200 {
            let x = ints.sample(&mut rng);
            let k = x.exp().round();
            assert!((1.0..=64.0).contains(&k) && (k.ln() - x).abs() < 1e-12);
        }
    }
}
