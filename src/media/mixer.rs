//! Mixer (in progress).
