//! gpumesh-probe: the worker agent.
//!
//! Will hold the GPU probe (`GpuSource`: NVML, fake profiles, none), host statistics, the agent
//! loop (bootstrap, DHT publication, coordinator fallback, drain), the tunnel supervisor, and the
//! mock GPU service used by demos, fleets and tests.
