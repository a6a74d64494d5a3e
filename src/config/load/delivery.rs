//! `[delivery]`: the dedicated line and the upload timers shared by every
//! destination.
//!
//! | key | unit | default |
//! |---|---|---|
//! | `allowed_networks` | CIDR networks; a destination outside is refused | none: every destination refused |
//! | `retry_initial` | duration, above 0 | 5s |
//! | `retry_max` | duration, at least `retry_initial` | 600s |
//! | `hold_after` | duration; then held with an alarm, never deleted | 7d |
//! | `keep_delivered` | duration | 1d |
//! | `connect_timeout` | duration, above 0 | 10s |
//! | `keepalive` | duration; a dead line is noticed within about twice this | 5s |

use super::{ConfigError, Ctx, S};
use crate::config::{Delivery, IpNet};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    allowed_networks: S<Vec<Spanned<String>>>,
    retry_initial: S<String>,
    retry_max: S<String>,
    hold_after: S<String>,
    keep_delivered: S<String>,
    connect_timeout: S<String>,
    keepalive: S<String>,
}

pub(super) fn delivery(cx: &Ctx, rd: &RawDelivery) -> Result<Delivery, ConfigError> {
    let mut allowed_networks = Vec::new();
    for n in rd.allowed_networks.iter().flat_map(|l| l.get_ref()) {
        allowed_networks.push(
            IpNet::parse(n.get_ref())
                .map_err(|r| cx.err(n.span(), "delivery.allowed_networks", r))?,
        );
    }
    let delivery = Delivery {
        allowed_networks,
        retry_initial: cx.duration(
            "delivery.retry_initial",
            &rd.retry_initial,
            Duration::from_secs(5),
        )?,
        retry_max: cx.duration(
            "delivery.retry_max",
            &rd.retry_max,
            Duration::from_secs(600),
        )?,
        hold_after: cx.duration(
            "delivery.hold_after",
            &rd.hold_after,
            Duration::from_secs(7 * 86400),
        )?,
        keep_delivered: cx.duration(
            "delivery.keep_delivered",
            &rd.keep_delivered,
            Duration::from_secs(86400),
        )?,
        connect_timeout: cx.duration(
            "delivery.connect_timeout",
            &rd.connect_timeout,
            Duration::from_secs(10),
        )?,
        keepalive: cx.duration("delivery.keepalive", &rd.keepalive, Duration::from_secs(5))?,
    };
    timers(cx, rd, &delivery)?;
    Ok(delivery)
}

/// The retry timers must grow from above zero, and a connection attempt
/// must be allowed some time.
fn timers(cx: &Ctx, rd: &RawDelivery, delivery: &Delivery) -> Result<(), ConfigError> {
    if delivery.retry_initial.is_zero() {
        let span = rd.retry_initial.as_ref().map(|s| s.span()).unwrap_or(0..0);
        return Err(cx.err(span, "delivery.retry_initial", "must be more than 0"));
    }
    if delivery.retry_max < delivery.retry_initial {
        let span = rd
            .retry_max
            .as_ref()
            .or(rd.retry_initial.as_ref())
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(cx.err(
            span,
            "delivery.retry_max",
            "must not be less than delivery.retry_initial",
        ));
    }
    if delivery.connect_timeout.is_zero() {
        let span = rd
            .connect_timeout
            .as_ref()
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(cx.err(span, "delivery.connect_timeout", "must be more than 0"));
    }
    Ok(())
}
