//! Fake GPUs from a profile: built-in classes for demos and tests, or a TOML file.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use gpumesh_dht::record::GpuInfo;
use serde::Deserialize;

use super::GpuSource;
use crate::error::ProbeError;

/// A built-in profile: (name, model, count, VRAM MiB, power limit W, relative speed per GPU).
type Profile = (&'static str, &'static str, u32, u64, f32, f64);

/// The built-in profiles. Speed is relative to one A100 (used by the mock service). VRAM is
/// what NVML reports for the card (a little under the size it is sold with). `h200x8` is the
/// biggest machine a volunteer could plausibly have, the hardware a liar would claim.
pub const PROFILES: &[(&str, &str, u32, u64, f32, f64)] = &[
    ("h100x2", "NVIDIA H100 80GB HBM3", 2, 81_559, 700.0, 2.0),
    ("h200x8", "NVIDIA H200", 8, 143_771, 700.0, 2.5),
    ("a100", "NVIDIA A100-SXM4-40GB", 1, 40_960, 400.0, 1.0),
    ("rtx3090", "NVIDIA GeForce RTX 3090", 1, 24_576, 350.0, 0.6),
    ("t4", "Tesla T4", 1, 15_360, 70.0, 0.25),
];

/// A profile file: `[[gpu]]` tables with the fields of [`GpuInfo`]; `uuid` and
/// `vram_free_mib` may be left out, and `speed` (relative to an A100) is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default)]
    speed: Option<f64>,
    gpu: Vec<FileGpu>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGpu {
    model: String,
    #[serde(default)]
    uuid: Option<String>,
    vram_total_mib: u64,
    #[serde(default)]
    vram_free_mib: Option<u64>,
    #[serde(default)]
    util_pct: Option<u8>,
    #[serde(default)]
    mem_util_pct: Option<u8>,
    #[serde(default)]
    temperature_c: Option<u16>,
    #[serde(default)]
    power_w: Option<f32>,
    #[serde(default)]
    power_limit_w: Option<f32>,
}

/// GPUs that exist only in memory. Figures can be changed while running, which is how tests
/// drive "VRAM free crossed a threshold".
#[derive(Debug)]
pub struct FakeGpus {
    name: String,
    speed: f64,
    gpus: Mutex<Vec<GpuInfo>>,
}

impl FakeGpus {
    /// A fake from a built-in profile name or a path to a TOML file.
    pub fn from_profile(profile: &str, seed: u64) -> Result<Self, ProbeError> {
        if let Some(p) = PROFILES.iter().find(|p| p.0 == profile) {
            return Ok(Self::builtin(p, seed));
        }
        let path = Path::new(profile);
        if path.extension().is_some_and(|e| e == "toml") || path.exists() {
            return Self::from_file(path, seed);
        }
        Err(ProbeError::UnknownProfile(profile.to_owned()))
    }

    fn builtin(p: &Profile, seed: u64) -> Self {
        let &(name, model, count, vram, limit, speed) = p;
        let gpus = (0..count)
            .map(|i| GpuInfo {
                model: model.to_owned(),
                uuid: fake_uuid(seed, i),
                vram_total_mib: vram,
                vram_free_mib: vram - 512,
                util_pct: Some(0),
                mem_util_pct: Some(0),
                temperature_c: Some(35),
                power_w: Some(limit * 0.1),
                power_limit_w: Some(limit),
            })
            .collect();
        Self {
            name: name.to_owned(),
            speed: speed * f64::from(count),
            gpus: Mutex::new(gpus),
        }
    }

    /// A fake from a TOML profile file.
    pub fn from_file(path: &Path, seed: u64) -> Result<Self, ProbeError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProbeError::ProfileIo {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |message: String| ProbeError::ProfileInvalid {
            path: path.to_owned(),
            message,
        };
        let file: ProfileFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if file.gpu.is_empty() {
            return Err(invalid("no [[gpu]] entries".to_owned()));
        }
        let mut gpus = Vec::with_capacity(file.gpu.len());
        for (i, g) in file.gpu.into_iter().enumerate() {
            if g.model.trim().is_empty() || g.vram_total_mib == 0 {
                return Err(invalid(format!(
                    "gpu {i}: model and vram_total_mib are required"
                )));
            }
            let free = g.vram_free_mib.unwrap_or(g.vram_total_mib);
            if free > g.vram_total_mib {
                return Err(invalid(format!(
                    "gpu {i}: vram_free_mib exceeds vram_total_mib"
                )));
            }
            if g.util_pct.is_some_and(|u| u > 100) || g.mem_util_pct.is_some_and(|u| u > 100) {
                return Err(invalid(format!("gpu {i}: utilisation above 100%")));
            }
            gpus.push(GpuInfo {
                model: g.model,
                uuid: g.uuid.unwrap_or_else(|| fake_uuid(seed, i as u32)),
                vram_total_mib: g.vram_total_mib,
                vram_free_mib: free,
                util_pct: g.util_pct,
                mem_util_pct: g.mem_util_pct,
                temperature_c: g.temperature_c,
                power_w: g.power_w,
                power_limit_w: g.power_limit_w,
            });
        }
        let speed = file.speed.unwrap_or(gpus.len() as f64);
        if !(speed.is_finite() && speed > 0.0) {
            return Err(invalid("speed must be a positive number".to_owned()));
        }
        Ok(Self {
            name: path.display().to_string(),
            speed,
            gpus: Mutex::new(gpus),
        })
    }

    /// The whole machine's speed relative to one A100 (the mock service's time scale).
    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Changes a device's free VRAM (tests and simulations).
    pub fn set_vram_free(&self, index: usize, free_mib: u64) {
        let mut gpus = self.gpus.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(g) = gpus.get_mut(index) {
            g.vram_free_mib = free_mib.min(g.vram_total_mib);
        }
    }
}

/// The relative speed of a built-in profile, if `name` is one.
pub fn profile_speed(name: &str) -> Option<f64> {
    PROFILES
        .iter()
        .find(|p| p.0 == name)
        .map(|p| p.5 * f64::from(p.2))
}

fn fake_uuid(seed: u64, index: u32) -> String {
    format!(
        "GPU-fake{:08x}-{:04x}-{index:04}",
        seed >> 32,
        seed & 0xffff_ffff
    )
}

impl GpuSource for FakeGpus {
    fn kind(&self) -> String {
        format!("fake:{}", self.name)
    }
    fn sample(&self) -> Result<Vec<GpuInfo>, ProbeError> {
        Ok(self
            .gpus
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_report_every_device() {
        let h = FakeGpus::from_profile("h100x2", 7).unwrap();
        let gpus = h.sample().unwrap();
        assert_eq!(gpus.len(), 2);
        assert_ne!(gpus[0].uuid, gpus[1].uuid);
        assert!(gpus.iter().all(|g| g.vram_free_mib <= g.vram_total_mib));
        assert_eq!(h.speed(), 4.0);
        for name in ["a100", "rtx3090", "t4"] {
            assert_eq!(
                FakeGpus::from_profile(name, 1)
                    .unwrap()
                    .sample()
                    .unwrap()
                    .len(),
                1
            );
        }
    }

    #[test]
    fn distinct_seeds_give_distinct_uuids() {
        let a = FakeGpus::from_profile("t4", 1).unwrap().sample().unwrap();
        let b = FakeGpus::from_profile("t4", 2).unwrap().sample().unwrap();
        assert_ne!(a[0].uuid, b[0].uuid);
    }

    #[test]
    fn unknown_profile_is_an_error_that_lists_every_builtin() {
        let e = FakeGpus::from_profile("gtx480", 0).unwrap_err();
        assert!(matches!(e, ProbeError::UnknownProfile(_)), "{e}");
        for p in PROFILES {
            assert!(e.to_string().contains(p.0), "{e} lacks {}", p.0);
        }
    }

    #[test]
    fn h200x8_is_eight_h200s_the_rulebook_believes() {
        let f = FakeGpus::from_profile("h200x8", 9).unwrap();
        let gpus = f.sample().unwrap();
        assert_eq!(gpus.len(), 8);
        assert!(
            gpus.iter()
                .all(|g| g.model == "NVIDIA H200" && g.vram_total_mib == 143_771)
        );
        let uuids: std::collections::HashSet<_> = gpus.iter().map(|g| &g.uuid).collect();
        assert_eq!(uuids.len(), 8);
        assert_eq!(f.speed(), 20.0);
        let mut record = gpumesh_dht::WorkerRecord::new(Vec::new(), "https://w.example.org");
        record.gpus = gpus;
        record.tunnel_url = format!("https://{}.example.org", "w".repeat(60));
        record.agent_version = "0.1.0".into();
        // Eight GPUs with every figure known still fit in a signed record, and pass the
        // rulebook's plausibility check that signing applies.
        let key = libp2p::identity::Keypair::generate_ed25519();
        let now = gpumesh_dht::rules::unix_ms();
        (record.issued_at_ms, record.expires_at_ms) = (now, now + 60_000);
        let limits = gpumesh_dht::rules::RecordLimits::default();
        let signed = gpumesh_dht::SignedRecord::sign(&key, record, &limits, now);
        assert!(signed.is_ok(), "{signed:?}");
    }

    #[test]
    fn every_builtin_profile_makes_plausible_claims() {
        for p in PROFILES {
            let mut record = gpumesh_dht::WorkerRecord::new(Vec::new(), "https://w.example.org");
            record.gpus = FakeGpus::from_profile(p.0, 1).unwrap().sample().unwrap();
            let limits = gpumesh_dht::rules::ClaimLimits::default();
            assert_eq!(
                gpumesh_dht::rules::check_claims(&record, &limits),
                Ok(()),
                "{}",
                p.0
            );
        }
    }

    #[test]
    fn profile_file_round_trip_and_validation() {
        let dir = std::env::temp_dir().join(format!("gpumesh-fake-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("l4.toml");
        std::fs::write(
            &good,
            "speed = 0.5\n[[gpu]]\nmodel = \"NVIDIA L4\"\nvram_total_mib = 23034\nvram_free_mib = 20000\n",
        )
        .unwrap();
        let f = FakeGpus::from_profile(good.to_str().unwrap(), 3).unwrap();
        let g = f.sample().unwrap();
        assert_eq!(g[0].model, "NVIDIA L4");
        assert_eq!(g[0].util_pct, None, "unsupported fields stay unknown");
        assert_eq!(f.speed(), 0.5);

        let bad = dir.join("bad.toml");
        std::fs::write(
            &bad,
            "[[gpu]]\nmodel = \"x\"\nvram_total_mib = 10\nvram_free_mib = 11\n",
        )
        .unwrap();
        assert!(matches!(
            FakeGpus::from_profile(bad.to_str().unwrap(), 0),
            Err(ProbeError::ProfileInvalid { .. })
        ));
        let missing = dir.join("missing.toml");
        assert!(matches!(
            FakeGpus::from_profile(missing.to_str().unwrap(), 0),
            Err(ProbeError::ProfileIo { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
