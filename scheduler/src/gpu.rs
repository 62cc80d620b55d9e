//! GPU speed classes: throughput relative to one H100, by model name.
//!
//! LLM decode is memory-bandwidth bound, so the factors start from datasheet memory
//! bandwidth relative to the H100 SXM (3.35 TB/s): A100 80GB 2.04 TB/s (0.61), RTX 3090
//! 0.94 TB/s (0.28), T4 0.32 TB/s (0.096), with a small uplift for the compute-bound
//! prefill phase, rounded to round figures (A100 0.6, RTX 3090 0.35, T4 0.12).
//! They are priors: the scheduler's latency estimate corrects them per worker.

/// Speed assumed for a GPU model not in the table (a mid-range card).
pub const UNKNOWN_SPEED: f64 = 0.25;

/// Known classes: (case-insensitive substring of the model name, factor). First match wins,
/// so longer names come before their prefixes.
pub const SPEED_CLASSES: &[(&str, f64)] = &[
    ("h200", 1.15),
    ("h100", 1.0),
    ("a100", 0.6),
    ("l40s", 0.45),
    ("4090", 0.4),
    ("a10g", 0.3),
    ("3090", 0.35),
    ("a10", 0.3),
    ("l4", 0.14),
    ("t4", 0.12),
];

/// Throughput of `model` relative to an H100, [`UNKNOWN_SPEED`] when unknown.
pub fn speed_factor(model: &str) -> f64 {
    SPEED_CLASSES
        .iter()
        .find(|(name, _)| contains_ignore_ascii_case(model, name))
        .map_or(UNKNOWN_SPEED, |&(_, f)| f)
}

/// Label of a GPU model with no known class.
pub const OTHER_CLASS: &str = "other";

/// The speed class of `model` (`"h100"`, `"a100"`, `"t4"`, …) or [`OTHER_CLASS`]: a bounded
/// name set ([`SPEED_CLASSES`] plus `other`), safe as a metric label where raw model strings,
/// chosen by volunteers, are not.
pub fn gpu_class(model: &str) -> &'static str {
    SPEED_CLASSES
        .iter()
        .find(|(name, _)| contains_ignore_ascii_case(model, name))
        .map_or(OTHER_CLASS, |&(name, _)| name)
}

/// `haystack` contains `needle`, ignoring ASCII case; no allocation.
pub(crate) fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_bounded_labels() {
        assert_eq!(gpu_class("NVIDIA H100 80GB HBM3"), "h100");
        assert_eq!(gpu_class("NVIDIA A10G"), "a10g");
        assert_eq!(gpu_class("Tesla T4"), "t4");
        assert_eq!(gpu_class("Radeon RX 7900 XTX <script>"), OTHER_CLASS);
        assert_eq!(gpu_class(""), OTHER_CLASS);
    }

    #[test]
    fn real_nvml_names_map_to_classes() {
        assert_eq!(speed_factor("NVIDIA H100 80GB HBM3"), 1.0);
        assert_eq!(speed_factor("Tesla T4"), 0.12);
        assert_eq!(speed_factor("NVIDIA GeForce RTX 3090"), 0.35);
        assert_eq!(speed_factor("NVIDIA A10G"), 0.3);
        assert_eq!(speed_factor("Some Future GPU"), UNKNOWN_SPEED);
    }

    #[test]
    fn substring_match_ignores_case() {
        assert!(contains_ignore_ascii_case("NVIDIA A100-SXM4", "a100"));
        assert!(!contains_ignore_ascii_case("T4", "h100"));
        assert!(contains_ignore_ascii_case("x", ""));
    }
}
