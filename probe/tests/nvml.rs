//! The NVML probe against `nvidia-smi` on a machine with a GPU:
//! `cargo test -p gpumesh-probe --test nvml -- --ignored`.

use std::process::Command;

use gpumesh_probe::gpu::{GpuSource, NvmlSource};

#[test]
#[ignore = "needs an NVIDIA GPU, its driver and nvidia-smi"]
fn nvml_probe_matches_nvidia_smi() {
    let source = NvmlSource::init().expect("NVML loads on a GPU machine");
    let gpus = source.sample().expect("NVML sample");
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=uuid,name,memory.total,power.limit,temperature.gpu",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .expect("nvidia-smi runs");
    assert!(out.status.success(), "nvidia-smi failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<String>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(|f| f.trim().to_owned()).collect())
        .collect();
    assert_eq!(gpus.len(), rows.len(), "every device is reported");
    for row in rows {
        let g = gpus
            .iter()
            .find(|g| g.uuid == row[0])
            .unwrap_or_else(|| panic!("NVML lacks {}", row[0]));
        assert_eq!(g.model, row[1]);
        let smi_total: u64 = row[2].parse().unwrap();
        assert!(
            g.vram_total_mib.abs_diff(smi_total) <= smi_total / 100 + 64,
            "VRAM total {} vs nvidia-smi {smi_total}",
            g.vram_total_mib
        );
        assert!(g.vram_free_mib <= g.vram_total_mib);
        if let (Some(limit), Ok(smi)) = (g.power_limit_w, row[3].parse::<f32>()) {
            assert!((limit - smi).abs() <= 1.0, "power limit {limit} vs {smi}");
        }
        if let (Some(t), Ok(smi)) = (g.temperature_c, row[4].parse::<i32>()) {
            assert!((i32::from(t) - smi).abs() <= 5, "temperature {t} vs {smi}");
        }
    }
}
