//! Plausible claims: what a record may say about its hardware and load.
//!
//! A record is written by a stranger, so its figures are claims. Two kinds of rule apply:
//!
//! - **Refusals** ([`check_claims`] → [`Implausible`]): claims that cannot be true of any
//!   machine — more GPUs than a host carries, a known GPU with more VRAM than any model of its
//!   class ships with, more free VRAM than total. A record that makes one is refused
//!   everywhere, like a record that breaks the schema.
//! - **Clamps** ([`clamp_claims`], [`clamp_load`] → [`Clamp`]): figures that may be an
//!   honest over-estimate (an engine configured for 256 sequences, a queue counter that ran
//!   away) are cut to a ceiling. Signed bytes cannot be changed, so clamps apply to the
//!   reader's copy (a gateway's view), never to what a DHT node stores.
//!
//! The GPU count has a size cap too ([`super::MAX_GPUS`] in [`super::check_gpus`], a bound on
//! what a node stores, the same everywhere); [`ClaimLimits::max_gpus`] defaults to that cap
//! and lets a reader tighten it, so with the defaults the count is refused once (as schema).
//!
//! A model string that names no known class is *not* refused: new cards appear all the
//! time. Such a worker simply gets no benefit of the doubt from its claims (the scheduler
//! starts it from a conservative prior and learns its capacity from serving).

use super::MAX_GPUS;
use crate::record::{GpuInfo, LoadInfo, WorkerRecord};

/// Slack above a class's largest VRAM size, percent: firmware and board variants report a
/// little more or less than the nominal size.
pub const VRAM_SLACK_PCT: u64 = 3;

/// A known GPU class and the VRAM sizes it ships with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuClass {
    /// Short name, e.g. `"H100"` (log fields and metric labels; a bounded set).
    pub name: &'static str,
    /// The words a model string must contain (compared whole and case-blind), e.g. `["RTX",
    /// "4090"]`; whole words keep `A10` from matching `A100` and `H200` from matching `GH200`.
    pub words: &'static [&'static str],
    /// Nominal VRAM sizes of the class's models, GB as sold (NVML reports at most this many
    /// GiB: an 80 GB H100 reports 81 559 MiB, a 16 GB T4 15 360 MiB).
    pub vram_gb: &'static [u64],
}

impl GpuClass {
    /// The most VRAM a card of this class can report, MiB: its largest size in GiB plus
    /// [`VRAM_SLACK_PCT`].
    pub fn max_vram_mib(&self) -> u64 {
        let largest = self.vram_gb.iter().copied().max().unwrap_or(0) * 1024;
        largest + largest * VRAM_SLACK_PCT / 100
    }
}

/// The GPU classes whose claims can be checked. Anything else is "unknown".
pub const GPU_CLASSES: &[GpuClass] = &[
    class("H200", &["H200"], &[141]),
    class("H100", &["H100"], &[80, 94]),
    class("A100", &["A100"], &[40, 80]),
    class("L40S", &["L40S"], &[48]),
    class("RTX 4090", &["RTX", "4090"], &[24]),
    class("A10G", &["A10G"], &[24]),
    class("RTX 3090", &["RTX", "3090"], &[24]),
    class("A10", &["A10"], &[24]),
    class("L4", &["L4"], &[24]),
    class("T4", &["T4"], &[16]),
];

const fn class(
    name: &'static str,
    words: &'static [&'static str],
    vram_gb: &'static [u64],
) -> GpuClass {
    GpuClass {
        name,
        words,
        vram_gb,
    }
}

/// The class a model string names, if any. A string that names several (only a crafted one
/// does) gets the one with the least VRAM: a claim must be plausible for every class named.
pub fn gpu_class(model: &str) -> Option<&'static GpuClass> {
    let words: Vec<String> = model
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    GPU_CLASSES
        .iter()
        .filter(|class| class.words.iter().all(|w| words.iter().any(|m| m == w)))
        .min_by_key(|class| class.max_vram_mib())
}

/// Ceilings on what a record may claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLimits {
    /// Most concurrency slots (`max_concurrency`) taken at face value; more is clamped.
    pub max_concurrency: u32,
    /// Most GPUs one machine may list; more is refused (at most [`MAX_GPUS`] counts).
    pub max_gpus: usize,
    /// Longest queue (`queue_depth`) taken at face value; more is clamped.
    pub max_queue_depth: u32,
}

impl Default for ClaimLimits {
    fn default() -> Self {
        Self {
            max_concurrency: 64,
            max_gpus: MAX_GPUS,
            max_queue_depth: 4096,
        }
    }
}

/// A claim that cannot be true: the record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Implausible {
    /// More GPUs than [`ClaimLimits::max_gpus`].
    #[error("{count} GPUs listed, at most {max} allowed")]
    TooManyGpus {
        /// GPUs listed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A GPU of a known class claims more VRAM than any model of the class has.
    #[error(
        "GPU {gpu} ({class}) claims {claimed_mib} MiB of VRAM, the class has at most {max_mib}"
    )]
    VramBeyondClass {
        /// Index of the GPU in the record.
        gpu: usize,
        /// The class its model names ([`GpuClass::name`]).
        class: &'static str,
        /// VRAM claimed, MiB.
        claimed_mib: u64,
        /// The class's ceiling ([`GpuClass::max_vram_mib`]).
        max_mib: u64,
    },
    /// A GPU claims more free VRAM than it has.
    #[error("GPU {gpu} claims {free_mib} MiB free of {total_mib} MiB")]
    FreeAboveTotal {
        /// Index of the GPU in the record.
        gpu: usize,
        /// Free VRAM claimed, MiB.
        free_mib: u64,
        /// Total VRAM claimed, MiB.
        total_mib: u64,
    },
}

impl Implausible {
    /// Stable label for metrics (one per variant).
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooManyGpus { .. } => "too_many_gpus",
            Self::VramBeyondClass { .. } => "vram_beyond_class",
            Self::FreeAboveTotal { .. } => "free_above_total",
        }
    }
}

/// A figure cut down to its ceiling: the record is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Clamp {
    /// `max_concurrency` above [`ClaimLimits::max_concurrency`].
    Concurrency,
    /// `in_flight` above [`ClaimLimits::max_concurrency`]: more than any worker is believed
    /// to run at once.
    InFlight,
    /// `queue_depth` above [`ClaimLimits::max_queue_depth`].
    QueueDepth,
}

impl Clamp {
    /// Stable label for metrics (one per variant).
    pub fn label(self) -> &'static str {
        match self {
            Self::Concurrency => "concurrency",
            Self::InFlight => "in_flight",
            Self::QueueDepth => "queue_depth",
        }
    }
}

/// Refuses a record whose hardware claims cannot be true. Load figures are not judged here
/// ([`clamp_claims`] bounds them), so clamping never changes this verdict.
///
/// # Errors
/// The first [`Implausible`] claim found.
pub fn check_claims(record: &WorkerRecord, limits: &ClaimLimits) -> Result<(), Implausible> {
    if record.gpus.len() > limits.max_gpus {
        return Err(Implausible::TooManyGpus {
            count: record.gpus.len(),
            max: limits.max_gpus,
        });
    }
    record.gpus.iter().enumerate().try_for_each(check_gpu)
}

fn check_gpu((gpu, g): (usize, &GpuInfo)) -> Result<(), Implausible> {
    if g.vram_free_mib > g.vram_total_mib {
        return Err(Implausible::FreeAboveTotal {
            gpu,
            free_mib: g.vram_free_mib,
            total_mib: g.vram_total_mib,
        });
    }
    match gpu_class(&g.model) {
        Some(class) if g.vram_total_mib > class.max_vram_mib() => {
            Err(Implausible::VramBeyondClass {
                gpu,
                class: class.name,
                claimed_mib: g.vram_total_mib,
                max_mib: class.max_vram_mib(),
            })
        }
        _ => Ok(()),
    }
}

/// Cuts load figures to their ceilings (a gossip heartbeat's or a registry heartbeat's
/// load). Every figure is clamped; the first one that was is returned, for a metric.
pub fn clamp_load(load: &mut LoadInfo, limits: &ClaimLimits) -> Option<Clamp> {
    let mut first = None;
    let mut cut = |value: &mut u32, ceiling: u32, clamp: Clamp| {
        if *value > ceiling {
            *value = ceiling;
            first.get_or_insert(clamp);
        }
    };
    cut(
        &mut load.max_concurrency,
        limits.max_concurrency,
        Clamp::Concurrency,
    );
    cut(&mut load.in_flight, limits.max_concurrency, Clamp::InFlight);
    cut(
        &mut load.queue_depth,
        limits.max_queue_depth,
        Clamp::QueueDepth,
    );
    first
}

/// Cuts a record's figures that may be honest over-estimates to their ceilings (a reader's
/// copy: a gateway's view of a record it took). Returns the first clamp applied.
pub fn clamp_claims(record: &mut WorkerRecord, limits: &ClaimLimits) -> Option<Clamp> {
    clamp_load(&mut record.load, limits)
}

#[cfg(test)]
mod tests;
