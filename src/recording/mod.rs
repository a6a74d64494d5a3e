//! recording (to be built).
