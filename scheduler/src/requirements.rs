//! What a request needs from a worker: service, free VRAM, GPU model, capability tags.
//!
//! Built and validated once per request (from the gateway's path and headers); the pick path
//! then only compares, without allocating.

use crate::error::InvalidRequirements;

/// Longest accepted service name, GPU model filter or tag.
pub const MAX_NAME_LEN: usize = 128;
/// Most capability tags a request may require.
pub const MAX_TAGS: usize = 16;

/// A validated set of requirements. Build with [`Requirements::new`] and the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    service: String,
    min_free_vram_mib: u64,
    gpu_model: Option<String>,
    tags: Vec<String>,
}

impl Requirements {
    /// Requirements for `service`; the name must be non-empty, printable and short.
    pub fn new(service: impl Into<String>) -> Result<Self, InvalidRequirements> {
        let service = service.into();
        check_name("service", &service)?;
        Ok(Self {
            service,
            min_free_vram_mib: 0,
            gpu_model: None,
            tags: Vec::new(),
        })
    }

    /// Require at least `mib` MiB free on one GPU. Negative values are rejected.
    pub fn with_min_free_vram_mib(mut self, mib: i64) -> Result<Self, InvalidRequirements> {
        self.min_free_vram_mib =
            u64::try_from(mib).map_err(|_| InvalidRequirements::NegativeVram(mib as f64))?;
        Ok(self)
    }

    /// Require at least `gib` GiB free on one GPU (as a header would carry it). Negative,
    /// NaN and infinite values are rejected.
    pub fn with_min_free_vram_gib(mut self, gib: f64) -> Result<Self, InvalidRequirements> {
        if gib.is_nan() || gib.is_infinite() {
            return Err(InvalidRequirements::NotFinite);
        }
        if gib < 0.0 {
            return Err(InvalidRequirements::NegativeVram(gib));
        }
        self.min_free_vram_mib = (gib * 1024.0).ceil() as u64;
        Ok(self)
    }

    /// Require a GPU whose model name contains `model`, ignoring ASCII case (`"a100"`
    /// matches `"NVIDIA A100-SXM4-80GB"`).
    pub fn with_gpu_model(mut self, model: impl Into<String>) -> Result<Self, InvalidRequirements> {
        let model = model.into();
        check_name("gpu model", &model)?;
        self.gpu_model = Some(model);
        Ok(self)
    }

    /// Require a capability tag (exact match).
    pub fn with_tag(mut self, tag: impl Into<String>) -> Result<Self, InvalidRequirements> {
        let tag = tag.into();
        check_name("tag", &tag)?;
        if self.tags.len() >= MAX_TAGS {
            return Err(InvalidRequirements::TooManyTags(MAX_TAGS));
        }
        self.tags.push(tag);
        Ok(self)
    }

    /// The service.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Minimum free VRAM on one GPU, MiB.
    pub fn min_free_vram_mib(&self) -> u64 {
        self.min_free_vram_mib
    }

    /// GPU model filter, if any.
    pub fn gpu_model(&self) -> Option<&str> {
        self.gpu_model.as_deref()
    }

    /// Required capability tags.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }
}

fn check_name(what: &'static str, s: &str) -> Result<(), InvalidRequirements> {
    if s.is_empty() {
        return Err(InvalidRequirements::Empty(what));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(InvalidRequirements::TooLong(what, MAX_NAME_LEN));
    }
    if s.chars().any(char::is_control) {
        return Err(InvalidRequirements::ControlCharacter(what));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_values_with_reasons() {
        assert_eq!(
            Requirements::new(""),
            Err(InvalidRequirements::Empty("service"))
        );
        let r = Requirements::new("llm").unwrap();
        assert!(matches!(
            r.clone().with_min_free_vram_mib(-1),
            Err(InvalidRequirements::NegativeVram(_))
        ));
        assert!(matches!(
            r.clone().with_min_free_vram_gib(-0.5),
            Err(InvalidRequirements::NegativeVram(_))
        ));
        assert_eq!(
            r.clone().with_min_free_vram_gib(f64::NAN),
            Err(InvalidRequirements::NotFinite)
        );
        assert!(r.clone().with_gpu_model("a\u{0}b").is_err());
        assert!(r.with_tag("x".repeat(200)).is_err());
    }

    #[test]
    fn gib_rounds_up_to_whole_mib() {
        let r = Requirements::new("llm")
            .and_then(|r| r.with_min_free_vram_gib(1.5))
            .unwrap();
        assert_eq!(r.min_free_vram_mib(), 1536);
    }
}
