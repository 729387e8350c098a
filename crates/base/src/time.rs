//! The wall clock as Unix time. One implementation for every crate: seconds as `u64` for
//! token and posture arithmetic, `i64` where the store keeps them (SQL integers), and
//! milliseconds for rate limits. A clock before 1970 reads as 0 rather than failing.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Unix seconds now, as the store keeps them.
pub fn unix_now_i64() -> i64 {
    i64::try_from(unix_now()).unwrap_or(i64::MAX)
}

/// Unix milliseconds now.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Cheap jitter in `0..max` from the clock's sub-second noise: spreads timers across nodes;
/// not for anything secret.
pub fn jitter_ms(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    nanos.wrapping_mul(6364136223846793005) % max
}

/// Unix seconds as RFC 3339 (`2026-12-01T09:00:00Z`); `None` before 1970.
pub fn rfc3339(secs: i64) -> Option<String> {
    let secs = u64::try_from(secs).ok()?;
    Some(humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string())
}

/// An RFC 3339 time as Graph and Jamf Pro send them — `Z` or a `±hh:mm` offset, with or
/// without fractions of a second, `T` or a space between date and time — as Unix seconds.
/// `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    // Date and time of day are the first 19 characters; what follows is fractions and zone.
    let (civil, rest) = (s.get(..19)?, s.get(19..)?);
    let rest = match rest.strip_prefix('.') {
        Some(r) => r.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    let offset: i64 = match rest {
        "" | "Z" | "z" => 0,
        zone => {
            let (sign, hm) = match zone.as_bytes().first() {
                Some(b'+') => (1, &zone[1..]),
                Some(b'-') => (-1, &zone[1..]),
                _ => return None,
            };
            let (h, m) = hm.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let t = humantime::parse_rfc3339_weak(civil).ok()?;
    let secs = i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    Some(secs - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_both_ways() {
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339(-1), None);
        let t = 1_764_579_600; // 2025-12-01T09:00:00Z
        for s in [
            "2025-12-01T09:00:00Z",
            "2025-12-01T09:00:00.123Z",
            "2025-12-01T09:00:00.1234567Z",
            "2025-12-01T09:00:00",
            "2025-12-01 09:00:00Z",
            "2025-12-01T10:00:00+01:00",
            "2025-12-01T10:00:00.5+01:00",
            "2025-12-01T04:30:00-04:30",
        ] {
            assert_eq!(parse_rfc3339(s), Some(t), "{s}");
        }
        assert_eq!(parse_rfc3339(&rfc3339(t).unwrap()), Some(t));
        for bad in [
            "",
            "yesterday",
            "2025-12-01",
            "2025-12-01T09:00:00+1",
            "2025-12-01T09:00:00+25:00",
            "2025-12-01T09:00:00X",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
