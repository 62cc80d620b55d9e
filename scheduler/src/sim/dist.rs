//! Service-time distributions, all with mean 1 (one mean service time at speed 1.0).

use rand::Rng;
use rand_distr::{Distribution, Exp1, StandardNormal};

/// How much work a request is, in mean service times at speed 1.0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServiceDist {
    /// Exponential (CV 1): the supermarket model's assumption.
    Exponential,
    /// Log-normal with shape `sigma` (CV = √(e^σ² − 1)), scaled to mean 1.
    LogNormal {
        /// Shape σ of the underlying normal.
        sigma: f64,
    },
    /// Short and long prompts: `1 − p_long` of requests take `short`, `p_long` take
    /// `ratio × short`, scaled to mean 1 (each mode exponential around its mean).
    Bimodal {
        /// Share of long requests.
        p_long: f64,
        /// Long / short mean.
        ratio: f64,
    },
}

impl ServiceDist {
    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            ServiceDist::Exponential => "exp",
            ServiceDist::LogNormal { .. } => "lognormal",
            ServiceDist::Bimodal { .. } => "bimodal",
        }
    }

    /// A work amount (mean 1).
    pub fn sample(&self, rng: &mut impl Rng) -> f64 {
        match *self {
            ServiceDist::Exponential => Exp1.sample(rng),
            ServiceDist::LogNormal { sigma } => {
                let z: f64 = StandardNormal.sample(rng);
                (sigma * z - sigma * sigma / 2.0).exp()
            }
            ServiceDist::Bimodal { p_long, ratio } => {
                let short = 1.0 / (1.0 - p_long + p_long * ratio);
                let e: f64 = Exp1.sample(rng);
                if rng.random::<f64>() < p_long {
                    e * short * ratio
                } else {
                    e * short
                }
            }
        }
    }

    /// The median work amount (for "timeout = 5× the median").
    pub fn median(&self) -> f64 {
        match *self {
            ServiceDist::Exponential => std::f64::consts::LN_2,
            ServiceDist::LogNormal { sigma } => (-sigma * sigma / 2.0).exp(),
            ServiceDist::Bimodal { p_long, ratio } => {
                // Dominated by the short mode when p_long < 0.5.
                std::f64::consts::LN_2 / (1.0 - p_long + p_long * ratio)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn every_distribution_has_mean_one() {
        for d in [
            ServiceDist::Exponential,
            ServiceDist::LogNormal { sigma: 1.0 },
            ServiceDist::Bimodal {
                p_long: 0.1,
                ratio: 20.0,
            },
        ] {
            let mut rng = SmallRng::seed_from_u64(7);
            let n = 400_000;
            let mean = (0..n).map(|_| d.sample(&mut rng)).sum::<f64>() / n as f64;
            assert!((mean - 1.0).abs() < 0.03, "{} mean {mean}", d.name());
        }
    }
}
