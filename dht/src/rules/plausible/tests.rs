use proptest::prelude::*;

use super::*;

fn record(gpus: Vec<GpuInfo>) -> WorkerRecord {
    let mut r = WorkerRecord::new(vec!["ocr".parse().unwrap()], "https://w.example.org");
    r.gpus = gpus;
    r
}

fn gpu(model: &str, total_mib: u64) -> GpuInfo {
    GpuInfo::new(model, "GPU-0", total_mib, total_mib / 2)
}

#[test]
fn nvml_names_find_their_class_and_near_names_do_not() {
    let known = [
        ("NVIDIA H200", "H200"),
        ("NVIDIA H200 NVL", "H200"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 NVL", "H100"),
        ("NVIDIA H100 PCIe", "H100"),
        ("NVIDIA A100-SXM4-40GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA GeForce RTX 3090", "RTX 3090"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA L4", "L4"),
        ("Tesla T4", "T4"),
        ("tesla t4", "T4"),
    ];
    for (model, class) in known {
        assert_eq!(gpu_class(model).map(|c| c.name), Some(class), "{model}");
    }
    for model in [
        "NVIDIA GH200 480GB",
        "NVIDIA L40",
        "NVIDIA GeForce RTX 4080",
        "AMD Instinct MI300X",
        "NVIDIA T400",
        "m",
        "",
    ] {
        assert_eq!(gpu_class(model), None, "{model}");
    }
}

#[test]
fn a_name_that_names_two_classes_gets_the_smaller() {
    assert_eq!(gpu_class("NVIDIA H200 T4").map(|c| c.name), Some("T4"));
}

#[test]
fn what_real_cards_report_passes() {
    let real = [
        ("NVIDIA H200", 143_771),
        ("NVIDIA H100 80GB HBM3", 81_559),
        ("NVIDIA H100 NVL", 95_830),
        ("NVIDIA A100-SXM4-80GB", 81_920),
        ("NVIDIA A100-SXM4-40GB", 40_960),
        ("NVIDIA L40S", 46_068),
        ("NVIDIA GeForce RTX 4090", 24_564),
        ("NVIDIA A10G", 23_028),
        ("NVIDIA GeForce RTX 3090", 24_576),
        ("NVIDIA L4", 23_034),
        ("Tesla T4", 15_360),
    ];
    for (model, mib) in real {
        let r = record(vec![gpu(model, mib); 8]);
        assert_eq!(check_claims(&r, &ClaimLimits::default()), Ok(()), "{model}");
    }
}

#[test]
fn vram_beyond_the_class_is_refused_at_the_slack() {
    let h100 = GPU_CLASSES.iter().find(|c| c.name == "H100").unwrap();
    assert_eq!(h100.max_vram_mib(), 94 * 1024 * 103 / 100);
    let limits = ClaimLimits::default();
    let at = record(vec![gpu("NVIDIA H100 80GB HBM3", h100.max_vram_mib())]);
    assert_eq!(check_claims(&at, &limits), Ok(()));
    let two_tb = record(vec![
        gpu("NVIDIA T4", 15_360),
        gpu("NVIDIA H100 80GB HBM3", 2 * 1024 * 1024),
    ]);
    assert_eq!(
        check_claims(&two_tb, &limits),
        Err(Implausible::VramBeyondClass {
            gpu: 1,
            class: "H100",
            claimed_mib: 2 * 1024 * 1024,
            max_mib: h100.max_vram_mib(),
        })
    );
}

#[test]
fn an_unknown_model_is_not_judged_by_its_vram() {
    let r = record(vec![gpu("Future Accelerator 9000", 2 * 1024 * 1024)]);
    assert_eq!(check_claims(&r, &ClaimLimits::default()), Ok(()));
}

#[test]
fn free_above_total_is_refused() {
    let mut g = gpu("Tesla T4", 15_360);
    g.vram_free_mib = 15_361;
    let r = record(vec![gpu("Tesla T4", 15_360), g]);
    let e = check_claims(&r, &ClaimLimits::default()).unwrap_err();
    assert_eq!(
        e,
        Implausible::FreeAboveTotal {
            gpu: 1,
            free_mib: 15_361,
            total_mib: 15_360
        }
    );
    assert_eq!(e.label(), "free_above_total");
}

#[test]
fn gpu_count_beyond_a_tightened_limit_is_refused() {
    let limits = ClaimLimits {
        max_gpus: 8,
        ..ClaimLimits::default()
    };
    assert_eq!(check_claims(&record(vec![gpu("m", 1); 8]), &limits), Ok(()));
    assert_eq!(
        check_claims(&record(vec![gpu("m", 1); 9]), &limits),
        Err(Implausible::TooManyGpus { count: 9, max: 8 })
    );
}

#[test]
fn labels_are_distinct() {
    let refusals = [
        Implausible::TooManyGpus { count: 0, max: 0 },
        Implausible::VramBeyondClass {
            gpu: 0,
            class: "T4",
            claimed_mib: 0,
            max_mib: 0,
        },
        Implausible::FreeAboveTotal {
            gpu: 0,
            free_mib: 0,
            total_mib: 0,
        },
    ];
    let labels: std::collections::HashSet<_> = refusals.iter().map(Implausible::label).collect();
    assert_eq!(labels.len(), refusals.len());
    let clamps = [Clamp::Concurrency, Clamp::InFlight, Clamp::QueueDepth];
    let labels: std::collections::HashSet<_> = clamps.iter().map(|c| c.label()).collect();
    assert_eq!(labels.len(), clamps.len());
}

#[test]
fn load_is_clamped_to_the_ceilings() {
    let limits = ClaimLimits::default();
    let mut honest = LoadInfo {
        in_flight: 3,
        queue_depth: 10,
        max_concurrency: 4,
    };
    assert_eq!(clamp_load(&mut honest, &limits), None);
    assert_eq!(honest.max_concurrency, 4);

    let mut liar = LoadInfo {
        in_flight: 0,
        queue_depth: 0,
        max_concurrency: u32::MAX,
    };
    assert_eq!(clamp_load(&mut liar, &limits), Some(Clamp::Concurrency));
    assert_eq!(liar.max_concurrency, limits.max_concurrency);

    let mut runaway = LoadInfo {
        in_flight: u32::MAX,
        queue_depth: u32::MAX,
        max_concurrency: 8,
    };
    assert_eq!(clamp_load(&mut runaway, &limits), Some(Clamp::InFlight));
    assert_eq!(runaway.in_flight, limits.max_concurrency);
    assert_eq!(runaway.queue_depth, limits.max_queue_depth);

    let mut r = record(Vec::new());
    r.load.max_concurrency = 4_294_967_295;
    assert_eq!(clamp_claims(&mut r, &limits), Some(Clamp::Concurrency));
    assert_eq!(r.load.max_concurrency, 64);
}

fn any_model() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "NVIDIA H200",
            "NVIDIA H100 80GB HBM3",
            "NVIDIA A10",
            "Tesla T4",
            "NVIDIA GeForce RTX 4090",
        ])
        .prop_map(str::to_owned),
        ".{0,40}",
    ]
}

fn any_gpu() -> impl Strategy<Value = GpuInfo> {
    let vram = prop_oneof![0u64..200_000, any::<u64>()];
    (any_model(), vram.clone(), vram)
        .prop_map(|(model, total, free)| GpuInfo::new(model, "GPU-x", total, free))
}

fn any_load() -> impl Strategy<Value = LoadInfo> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(i, q, m)| LoadInfo {
        in_flight: i,
        queue_depth: q,
        max_concurrency: m,
    })
}

proptest! {
    #[test]
    fn clamping_bounds_the_load_and_never_changes_the_verdict(
        gpus in prop::collection::vec(any_gpu(), 0..20),
        load in any_load(),
        max_concurrency in 0u32..1000,
        max_gpus in 0usize..20,
        max_queue_depth in 0u32..10_000,
    ) {
        let limits = ClaimLimits { max_concurrency, max_gpus, max_queue_depth };
        let mut r = record(gpus);
        r.load = load;
        let verdict = check_claims(&r, &limits);
        let clamp = clamp_claims(&mut r, &limits);
        prop_assert_eq!(check_claims(&r, &limits), verdict);
        prop_assert!(r.load.max_concurrency <= max_concurrency);
        prop_assert!(r.load.in_flight <= max_concurrency);
        prop_assert!(r.load.queue_depth <= max_queue_depth);
        prop_assert_eq!(clamp.is_some(), r.load != load);
        prop_assert_eq!(clamp_claims(&mut r, &limits), None, "clamping is idempotent");
    }
}
