//! SIP dialog tracking (Sans-IO).
