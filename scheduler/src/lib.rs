//! gpumesh-scheduler: pure worker selection and the policy simulator.
//!
//! Will hold the worker view the gateway selects from, request requirements and filtering with
//! reasons, GPU-aware latency- and load-weighted power-of-two-choices, the reference policies,
//! and the discrete-event simulator behind `gpumesh sim`. No I/O; clock and RNG are injected.
