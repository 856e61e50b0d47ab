//! Samplers: which parameters trial `n` tries, given the finished trials.
//!
//! Every sampler is a pure function of (seed, trial number, finished trials): trial `n` draws
//! from its own generator, `Rng::new(mix(seed, n))`, never from a stream shared with earlier
//! trials. A resumed study therefore proposes exactly what the uninterrupted study would have,
//! without saving any sampler state.
//!
//! * `grid` — the Cartesian product of per-dimension grids ([`grid_values`]): every choice,
//!   every integer when there are at most `grid_points` of them, otherwise `grid_points` values
//!   evenly spaced from LOW to HIGH inclusive (log-spaced for `loguniform` and `int:…:log`,
//!   integers rounded and de-duplicated). Points are visited in an order shuffled by the seed
//!   (as Optuna's `GridSampler`), each exactly once; a failed point is not retried. When the
//!   grid is used up the study stops early instead of repeating points.
//! * `random` — each dimension independently: uniform, log-uniform (uniform in `ln`),
//!   integers uniform over `low..=high` (log integers: `round(exp(U(ln(low-½), ln(high+½))))`),
//!   choices uniform.
//! * `tpe` — see [`crate::tpe`].

use serde::{Deserialize, Serialize};

use qtrain_core::rng::Rng;

use crate::error::{Result, SweepError};
use crate::metric::Direction;
use crate::record::TrialRecord;
use crate::space::{Distribution, ParamValue, Params, SearchSpace};
use crate::tpe::{TpeConfig, TpeSampler};

/// `--grid_points`: values per continuous dimension of a grid search.
pub const DEFAULT_GRID_POINTS: usize = 3;
/// Grids larger than this are refused: they would never be searched to the end.
pub const MAX_GRID_SIZE: usize = 1_000_000;

/// Which sampler a study uses, with its settings (stored in `study.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SamplerConfig {
    Grid { grid_points: usize },
    Random,
    Tpe(TpeConfig),
}

impl SamplerConfig {
    /// `--sampler grid|random|tpe` with default settings.
    pub fn from_name(name: &str) -> Result<SamplerConfig> {
        match name {
            "grid" => Ok(SamplerConfig::Grid { grid_points: DEFAULT_GRID_POINTS }),
            "random" => Ok(SamplerConfig::Random),
            "tpe" => Ok(SamplerConfig::Tpe(TpeConfig::default())),
            other => Err(SweepError::InvalidConfig { message: format!("unknown sampler {other:?}; valid: grid, random, tpe") }),
        }
    }
}

/// A sampler ready to propose trials.
#[derive(Clone, Debug)]
pub enum Sampler {
    Grid(GridSampler),
    Random { space: SearchSpace, seed: u64 },
    Tpe { tpe: TpeSampler, seed: u64 },
}

impl Sampler {
    /// `n_trials` (the study's target) only sets TPE's default number of startup trials.
    pub fn new(config: &SamplerConfig, space: &SearchSpace, seed: u64, n_trials: usize) -> Result<Sampler> {
        Ok(match config {
            SamplerConfig::Grid { grid_points } => Sampler::Grid(GridSampler::new(space, *grid_points, seed)?),
            SamplerConfig::Random => Sampler::Random { space: space.clone(), seed },
            SamplerConfig::Tpe(tpe) => {
                let valid = tpe.n_ei_candidates >= 1 && tpe.prior_weight.is_finite() && tpe.prior_weight > 0.0;
                if !valid {
                    return Err(SweepError::InvalidConfig {
                        message: format!(
                            "TPE needs n_ei_candidates >= 1 and a finite prior_weight > 0, got {} and {}",
                            tpe.n_ei_candidates, tpe.prior_weight
                        ),
                    });
                }
                Sampler::Tpe { tpe: TpeSampler::new(space, tpe, n_trials), seed }
            }
        })
    }

    /// The parameters of trial `trial`, given every finished trial (`history`, in trial
    /// order). `None` only when a grid is used up.
    pub fn propose(&self, trial: usize, history: &[TrialRecord], direction: Direction) -> Option<Params> {
        match self {
            Sampler::Grid(grid) => grid.point(trial),
            Sampler::Random { space, seed } => {
                let mut rng = trial_rng(*seed, trial);
                let mut params = Params::new();
                for p in space.params() {
                    params.insert(p.name.clone(), sample_random(&p.distribution, &mut rng));
                }
                Some(params)
            }
            Sampler::Tpe { tpe, seed } => Some(tpe.propose(&mut trial_rng(*seed, trial), history, direction)),
        }
    }

    /// The number of grid points (grid sampler only).
    pub fn grid_size(&self) -> Option<usize> {
        match self {
            Sampler::Grid(grid) => Some(grid.len()),
            _ => None,
        }
    }
}

/// SplitMix64's finaliser: a bijective 64-bit mix.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator of one trial. Hashing (rather than `seed + n`) keeps neighbouring trials'
/// streams unrelated: `Rng::new` seeds its state from consecutive SplitMix64 outputs.
pub(crate) fn trial_rng(seed: u64, trial: usize) -> Rng {
    Rng::new(mix64(seed ^ mix64((trial as u64).wrapping_add(0x9E37_79B9_7F4A_7C15))))
}

/// One independent draw from a dimension (the random sampler, and TPE's startup trials).
pub(crate) fn sample_random(distribution: &Distribution, rng: &mut Rng) -> ParamValue {
    match *distribution {
        Distribution::Uniform { low, high } => ParamValue::Float(rng.uniform(low, high)),
        Distribution::LogUniform { low, high } => ParamValue::Float(rng.uniform(low.ln(), high.ln()).exp().clamp(low, high)),
        Distribution::Int { low, high, log: false } => ParamValue::Int(low + rng.below((high - low) as u64 + 1) as i64),
        Distribution::Int { low, high, log: true } => {
            let x = rng.uniform((low as f64 - 0.5).ln(), (high as f64 + 0.5).ln());
            ParamValue::Int((x.exp().round() as i64).clamp(low, high))
        }
        Distribution::Choice { ref choices } => choices[rng.below(choices.len() as u64) as usize].clone(),
    }
}

/// The grid of one dimension (see the module docs).
pub fn grid_values(distribution: &Distribution, grid_points: usize) -> Vec<ParamValue> {
    let spaced = |lo: f64, hi: f64| -> Vec<f64> {
        match grid_points {
            0 => vec![],
            1 => vec![0.5 * (lo + hi)],
            n => (0..n).map(|i| if i == n - 1 { hi } else { lo + (hi - lo) * i as f64 / (n - 1) as f64 }).collect(),
        }
    };
    match *distribution {
        Distribution::Uniform { low, high } => spaced(low, high).into_iter().map(ParamValue::Float).collect(),
        Distribution::LogUniform { low, high } => {
            let mut xs: Vec<f64> = spaced(low.ln(), high.ln()).into_iter().map(f64::exp).collect();
            if grid_points >= 2 {
                // Exact endpoints, not exp(ln(x)).
                xs[0] = low;
                xs[grid_points - 1] = high;
            }
            xs.into_iter().map(|x| ParamValue::Float(x.clamp(low, high))).collect()
        }
        Distribution::Int { low, high, log } => {
            if (high - low + 1) as u64 <= grid_points as u64 {
                return (low..=high).map(ParamValue::Int).collect();
            }
            let xs = if log {
                spaced((low as f64).ln(), (high as f64).ln()).into_iter().map(f64::exp).collect()
            } else {
                spaced(low as f64, high as f64)
            };
            let mut ints: Vec<i64> = xs.into_iter().map(|x| (x.round() as i64).clamp(low, high)).collect();
            ints.dedup();
            ints.into_iter().map(ParamValue::Int).collect()
        }
        Distribution::Choice { ref choices } => choices.clone(),
    }
}

/// The grid sampler: trial `n` takes point `order[n]` of the Cartesian product.
#[derive(Clone, Debug)]
pub struct GridSampler {
    /// Per dimension: its name and grid values.
    axes: Vec<(String, Vec<ParamValue>)>,
    /// A seed-shuffled permutation of `0..size`.
    order: Vec<usize>,
}

impl GridSampler {
    pub fn new(space: &SearchSpace, grid_points: usize, seed: u64) -> Result<GridSampler> {
        if grid_points == 0 {
            return Err(SweepError::InvalidConfig { message: "--grid_points must be at least 1".into() });
        }
        let axes: Vec<(String, Vec<ParamValue>)> =
            space.params().iter().map(|p| (p.name.clone(), grid_values(&p.distribution, grid_points))).collect();
        let size = axes.iter().try_fold(1usize, |acc, (_, v)| acc.checked_mul(v.len()).filter(|&s| s <= MAX_GRID_SIZE));
        let Some(size) = size else {
            let sizes: Vec<String> = axes.iter().map(|(n, v)| format!("{n}: {}", v.len())).collect();
            return Err(SweepError::InvalidConfig {
                message: format!(
                    "the grid has more than {MAX_GRID_SIZE} points ({}); lower --grid_points or use --sampler tpe",
                    sizes.join(", ")
                ),
            });
        };
        let mut order: Vec<usize> = (0..size).collect();
        Rng::new(mix64(seed ^ 0x6772_6964_5f6f_7264)).shuffle(&mut order);
        Ok(GridSampler { axes, order })
    }

    /// The number of grid points.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The parameters of trial `trial`; `None` once every point has been proposed.
    pub fn point(&self, trial: usize) -> Option<Params> {
        let mut index = *self.order.get(trial)?;
        let mut values = vec![None; self.axes.len()];
        // Mixed radix, last dimension fastest.
        for (slot, (_, axis)) in values.iter_mut().zip(&self.axes).rev() {
            *slot = Some(axis[index % axis.len()].clone());
            index /= axis.len();
        }
        let mut params = Params::new();
        for ((name, _), value) in self.axes.iter().zip(values) {
            params.insert(name.clone(), value.expect("every axis visited"));
        }
        Some(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_values_follow_the_documented_rules() {
        let space =
            SearchSpace::parse(&["a=uniform:0.05:0.2", "b=loguniform:1e-5:1e-3", "c=int:3:15", "d=int:1:2", "e=int:1:64:log"]).unwrap();
        let g: Vec<Vec<ParamValue>> = space.params().iter().map(|p| grid_values(&p.distribution, 3)).collect();
        assert_eq!(g[0].len(), 3);
        assert_eq!(g[0][0], ParamValue::Float(0.05));
        assert_eq!(g[0][2], ParamValue::Float(0.2));
        assert_eq!(g[1][0], ParamValue::Float(1e-5));
        assert!((g[1][1].as_f64().unwrap() - 1e-4).abs() < 1e-15);
        assert_eq!(g[1][2], ParamValue::Float(1e-3));
        assert_eq!(g[2], [3, 9, 15].map(ParamValue::Int));
        assert_eq!(g[3], [1, 2].map(ParamValue::Int));
        assert_eq!(g[4], [1, 8, 64].map(ParamValue::Int));
        assert_eq!(grid_values(&space.params()[0].distribution, 1), [ParamValue::Float(0.125)]);
    }

    #[test]
    fn random_draws_stay_in_range_and_are_reproducible() {
        let space = SearchSpace::parse(&["a=loguniform:1e-5:1e-3", "b=int:1:64:log", "c=int:3:5", "d=choice:x,y,z"]).unwrap();
        let sampler = Sampler::new(&SamplerConfig::Random, &space, 7, 100).unwrap();
        let mut seen_c = [false; 3];
        for t in 0..300 {
            let p = sampler.propose(t, &[], Direction::Minimize).unwrap();
            space.check(&p).unwrap();
            assert_eq!(Some(p.clone()), sampler.propose(t, &[], Direction::Minimize));
            seen_c[(p.get("c").unwrap().as_i64().unwrap() - 3) as usize] = true;
        }
        assert_eq!(seen_c, [true; 3]);
        let other = Sampler::new(&SamplerConfig::Random, &space, 8, 100).unwrap();
        assert_ne!(sampler.propose(0, &[], Direction::Minimize), other.propose(0, &[], Direction::Minimize));
    }

    #[test]
    fn oversized_grids_and_bad_names_are_refused() {
        let specs: Vec<String> = (0..13).map(|i| format!("p{i}=uniform:0:1")).collect();
        let space = SearchSpace::parse(&specs).unwrap();
        let err = GridSampler::new(&space, 3, 0).unwrap_err().to_string();
        assert!(err.contains("--grid_points"), "{err}");
        assert!(GridSampler::new(&space, 0, 0).is_err());
        assert!(SamplerConfig::from_name("bayes").unwrap_err().to_string().contains("grid, random, tpe"));
    }
}
