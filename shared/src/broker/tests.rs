//! Address lists, rotation and connecting through them.
use super::*;

const ONE: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[test]
fn a_single_url_is_used_as_before() {
    let settings = BrokerSettings::new(ONE, "test");
    assert_eq!(settings.address_count(), 1);
    assert_eq!(settings.expose_url(), ONE);
    assert_eq!(
        settings.redacted_url(),
        "amqp://guest:***@127.0.0.1:5672/%2f"
    );
    assert_eq!(settings.current_url_redacted(), settings.redacted_url());
}

#[test]
fn a_comma_separated_list_gives_one_address_per_node() {
    let settings = BrokerSettings::new(
        " amqp://guest:pw@127.0.0.1:5681/%2f, amqp://guest:pw@127.0.0.1:5682/%2f ,\
         amqp://guest:pw@127.0.0.1:5683/%2f?heartbeat=5,",
        "test",
    );
    assert_eq!(
        settings.redacted_urls(),
        [
            "amqp://guest:***@127.0.0.1:5681/%2f",
            "amqp://guest:***@127.0.0.1:5682/%2f",
            "amqp://guest:***@127.0.0.1:5683/%2f?heartbeat=5",
        ]
    );
    assert_eq!(settings.expose_url(), "amqp://guest:pw@127.0.0.1:5681/%2f");
    assert_eq!(
        settings.redacted_url(),
        "amqp://guest:***@127.0.0.1:5681/%2f,amqp://guest:***@127.0.0.1:5682/%2f,\
         amqp://guest:***@127.0.0.1:5683/%2f?heartbeat=5"
    );
}

#[test]
fn a_comma_inside_a_password_does_not_split_the_url() {
    assert_eq!(
        split_urls("amqp://app:pa,ss@h1/v,amqps://app:x@h2/v"),
        ["amqp://app:pa,ss@h1/v", "amqps://app:x@h2/v"]
    );
    assert_eq!(split_urls(""), [""]);
    assert_eq!(split_urls(" , "), [""]);
    assert!(starts_with_scheme("amqp+tls://x"));
    assert!(!starts_with_scheme("ss@h1/v"));
    assert!(!starts_with_scheme("://x"));
}

#[test]
fn a_round_visits_every_address_once_from_the_start_index() {
    assert_eq!(attempt_order(0, 3).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(attempt_order(2, 3).collect::<Vec<_>>(), [2, 0, 1]);
    assert_eq!(attempt_order(0, 1).collect::<Vec<_>>(), [0]);
}

#[test]
fn clones_share_the_rotation() {
    let settings = BrokerSettings::new(format!("{ONE},{ONE}"), "a");
    let other = settings.for_role("b");
    settings.next.store(1, Ordering::Release);
    assert_eq!(other.start_index(), 1);
}

/// A loopback port nothing listens on (connections are refused at once).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn a_failed_round_names_every_address_without_its_password() {
    let ports = [closed_port(), closed_port(), closed_port()];
    let list = ports
        .iter()
        .map(|p| format!("amqp://app:s3cret-pw@127.0.0.1:{p}/%2f"))
        .collect::<Vec<_>>()
        .join(",");
    let settings = BrokerSettings::new(list, "test");
    settings.next.store(1, Ordering::Release);
    let error = settings.connect().await.expect_err("nothing listens");
    let text = error.to_string();
    assert!(!text.contains("s3cret-pw"), "{text}");
    for port in ports {
        assert!(
            text.contains(&format!("amqp://app:***@127.0.0.1:{port}/%2f")),
            "{text}"
        );
    }
    // Every address failed once, from index 1 round to index 0: the next round starts
    // after index 0, where this one started.
    assert_eq!(settings.start_index(), 1);
}

#[tokio::test]
async fn a_malformed_url_is_refused_without_quoting_its_password() {
    let settings = BrokerSettings::new("amqp:app:s3cret-pw@127.0.0.1", "test");
    let error = settings.connect().await.expect_err("malformed");
    assert!(!error.to_string().contains("s3cret-pw"), "{error}");
}

#[tokio::test]
async fn an_address_that_never_answers_is_given_up_after_the_timeout() {
    // Accepts TCP connections but never speaks AMQP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut settings = BrokerSettings::new(
        format!(
            "amqp://guest:guest@127.0.0.1:{port}/%2f,amqp://guest:guest@127.0.0.1:{}/%2f",
            closed_port()
        ),
        "test",
    );
    settings.connect_timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let error = settings.connect().await.expect_err("no broker");
    assert!(started.elapsed() < Duration::from_secs(5), "{error}");
    holder.abort();
}
