//! daemon (to be built).
