//! gpumesh-loadtest: whole-system runs.
//!
//! Will hold in-process fleets of real agents, goose scenarios (steady, chaos, slow-worker,
//! gateway-restart, coordinator-only), and JSON/markdown/SVG reports.
