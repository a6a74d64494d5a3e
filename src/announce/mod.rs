//! announce (to be built).
