use super::*;
use crate::config::ConfigSource;

fn limit(per_second: f64, burst: u32, max_clients: usize) -> RateLimit {
    RateLimit::new(RateLimitConfig {
        per_second,
        burst,
        client_header: None,
        max_clients,
    })
}

#[test]
fn a_client_gets_its_burst_then_the_sustained_rate_and_is_told_when_to_retry() {
    let limit = limit(2.0, 3, 10);
    let start = Instant::now();
    for _ in 0..3 {
        assert_eq!(limit.check("a", start), Ok(()));
    }
    let wait = limit.check("a", start).unwrap_err();
    assert_eq!(wait, Duration::from_millis(500), "one request every 500 ms");
    // Another client is not held back by the first.
    assert_eq!(limit.check("b", start), Ok(()));
    // Half a second later one request passes, the next does not.
    let later = start + Duration::from_millis(500);
    assert_eq!(limit.check("a", later), Ok(()));
    assert!(limit.check("a", later).is_err());
    // A long pause refills up to the burst, not beyond.
    let much_later = later + Duration::from_secs(60);
    for _ in 0..3 {
        assert_eq!(limit.check("a", much_later), Ok(()));
    }
    assert!(limit.check("a", much_later).is_err());
}

#[test]
fn memory_stays_bounded_by_forgetting_idle_clients_first() {
    let limit = limit(1.0, 1, 3);
    let at = |ms: u64| Instant::now() + Duration::from_millis(ms);
    let t0 = at(0);
    for client in ["a", "b", "c"] {
        assert_eq!(limit.check(client, t0), Ok(()));
    }
    // "b" and "c" keep sending; "a" goes quiet and refills.
    let t1 = t0 + Duration::from_millis(1100);
    assert_eq!(limit.check("b", t1), Ok(()));
    assert_eq!(limit.check("c", t1), Ok(()));
    // A fourth client: only the idle, refilled "a" is forgotten to make room.
    let t2 = t0 + Duration::from_millis(1200);
    assert_eq!(limit.check("d", t2), Ok(()));
    let buckets = limit.buckets.lock().unwrap();
    let mut clients: Vec<&str> = buckets.keys().map(String::as_str).collect();
    clients.sort_unstable();
    assert_eq!(clients, ["b", "c", "d"]);
}

#[test]
fn it_is_off_unless_configured_and_its_settings_are_checked() {
    assert_eq!(
        RateLimitConfig::from_config(&ConfigSource::default()).unwrap(),
        None
    );
    let on = ConfigSource::from_pairs([
        ("ORDER_RATE_LIMIT_PER_SEC", "2.5"),
        ("RATE_LIMIT_CLIENT_HEADER", "X-Forwarded-For"),
    ]);
    let config = RateLimitConfig::from_config(&on.scoped("order"))
        .unwrap()
        .unwrap();
    assert_eq!(config.burst, 3, "one second's worth, rounded up");
    assert_eq!(
        config.client_header.as_ref().map(HeaderName::as_str),
        Some("x-forwarded-for")
    );
    let negative = ConfigSource::from_pairs([("RATE_LIMIT_PER_SEC", "-1")]);
    assert!(RateLimitConfig::from_config(&negative).is_err());
}
