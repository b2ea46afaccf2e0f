//! The region's directory in Redis (work in progress; not wired into `pylon serve` yet).
