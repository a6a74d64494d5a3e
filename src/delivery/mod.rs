//! delivery (to be built).
