//! Links between nodes and regions (work in progress; not wired into `pylon serve` yet).
