//! Open-loop HTTP load from a scenario's templates: a fixed rate for a fixed time, whatever the
//! system does. A body template is JSON (or any text) with generated fields:
//! `${n}` (the request's number), `${uuid}`, `${int:LO..HI}` (inclusive) and
//! `${choice:A|B|C}`. The same scenario sends the same bodies (a fixed seed), apart from uuids.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::scenario::{FollowUp, LoadSpec};

/// What one load did.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub sent: u64,
    /// Responses by HTTP status (0: no response).
    pub statuses: BTreeMap<u16, u64>,
    /// Captured values of accepted requests, by variant tag ("" for the main body).
    pub captured: BTreeMap<String, Vec<String>>,
    /// Follow-up requests' final statuses (0: no answer).
    pub follow_ups: BTreeMap<u16, u64>,
}

impl LoadResult {
    /// The captured values `accepted:<load>` (every tag) or `accepted:<load>:<tag>` names.
    pub fn values(&self, tag: Option<&str>) -> Vec<String> {
        match tag {
            None => self.captured.values().flatten().cloned().collect(),
            Some(tag) => self.captured.get(tag).cloned().unwrap_or_default(),
        }
    }
}

fn accepts(spec: &LoadSpec, status: u16) -> bool {
    accepted(&spec.accept, status)
}

fn accepted(accept: &[u16], status: u16) -> bool {
    if accept.is_empty() {
        (200..=202).contains(&status)
    } else {
        accept.contains(&status)
    }
}

/// Send `follow_up` about `captured` (request `n`'s), `after_secs` after the first answer and
/// again after each retryable status; returns the last status (0: no answer).
async fn follow(
    client: &reqwest::Client,
    base: &str,
    follow_up: &FollowUp,
    n: u64,
    captured: &str,
) -> u16 {
    let mut mix = Mix(SEED ^ n);
    let path = render(
        &follow_up.path.replace("${captured}", captured),
        n,
        &mut mix,
    );
    let body = render(
        &follow_up.body.replace("${captured}", captured),
        n,
        &mut mix,
    );
    let method =
        reqwest::Method::from_bytes(follow_up.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut status = 0;
    for _ in 0..follow_up.attempts.max(1) {
        // The load's shape (a customer changing their mind a while later), not a wait for a
        // condition.
        tokio::time::sleep(Duration::from_secs_f64(follow_up.after_secs.max(0.0))).await;
        status = client
            .request(method.clone(), format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .map_or(0, |response| response.status().as_u16());
        if accepted(&follow_up.accept, status) || !follow_up.retry.contains(&status) {
            break;
        }
    }
    status
}

/// A small deterministic generator: the same scenario sends the same mix.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The generator's seed: the same for every load, so loads with the same variants pick the
/// same variant for the same request number.
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// The first `count` requests' variant tags and bodies, as [`run`] sends them.
#[cfg(test)]
pub(crate) fn bodies(spec: &LoadSpec, count: u64) -> Vec<(String, String)> {
    let mut mix = Mix(SEED);
    (0..count).map(|n| pick(spec, n, &mut mix)).collect()
}

/// The body of request `n` and its variant tag.
fn pick(spec: &LoadSpec, n: u64, mix: &mut Mix) -> (String, String) {
    if let Some(variant) = spec.variants.iter().find(|v| {
        v.every
            .is_some_and(|every| every > 0 && n % every == every - 1)
    }) {
        return (variant.tag.clone(), render(&variant.body, n, mix));
    }
    let roll = mix.next() % 100;
    let mut floor = 0;
    for variant in spec.variants.iter().filter(|v| v.every.is_none()) {
        let weight = variant.weight.unwrap_or(0);
        if roll < floor + weight {
            return (variant.tag.clone(), render(&variant.body, n, mix));
        }
        floor += weight;
    }
    (String::new(), render(&spec.body, n, mix))
}

/// Fill a template's generated fields.
fn render(template: &str, n: u64, mix: &mut Mix) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let field = &rest[start + 2..start + end];
        out.push_str(&generate(field, n, mix).unwrap_or_else(|| format!("${{{field}}}")));
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

fn generate(field: &str, n: u64, mix: &mut Mix) -> Option<String> {
    if field == "n" {
        return Some(n.to_string());
    }
    if field == "uuid" {
        return Some(uuid::Uuid::new_v4().to_string());
    }
    if let Some(range) = field.strip_prefix("int:") {
        let (lo, hi) = range.split_once("..")?;
        let (lo, hi): (u64, u64) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
        return Some((lo + mix.next() % (hi.saturating_sub(lo) + 1)).to_string());
    }
    if let Some(choices) = field.strip_prefix("choice:") {
        let choices: Vec<&str> = choices.split('|').collect();
        let index = usize::try_from(mix.next() % choices.len() as u64).ok()?;
        return choices.get(index).map(|c| (*c).to_owned());
    }
    None
}

/// Run `spec`'s command for `duration` with every service's URL in its environment, then
/// SIGTERM it; its exit status is recorded as the load's only "status" (0 when it was still
/// running and stopped cleanly, its code when it ended early or failed).
pub async fn run_command(
    spec: LoadSpec,
    urls: Vec<(String, String)>,
    duration: Duration,
) -> LoadResult {
    let mut result = LoadResult::default();
    let Some((program, args)) = spec.command.split_first() else {
        return result;
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("CHAOS_RATE_PER_SEC", spec.rate_per_sec.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (service, url) in &urls {
        let name = service.to_ascii_uppercase().replace('-', "_");
        command.env(format!("CHAOS_{name}_URL"), url);
    }
    let code = match command.spawn() {
        Err(error) => {
            eprintln!(
                "chaos: load {} could not start {program}: {error}",
                spec.name
            );
            u16::MAX
        }
        Ok(mut child) => match tokio::time::timeout(duration, child.wait()).await {
            Ok(status) => status
                .ok()
                .and_then(|s| s.code())
                .map_or(u16::MAX, exit_code),
            Err(_) => {
                if let Some(pid) = child.id() {
                    let _ = tokio::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status()
                        .await;
                }
                match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                    Ok(Ok(status)) => status.code().map_or(0, exit_code),
                    _ => {
                        let _ = child.kill().await;
                        0
                    }
                }
            }
        },
    };
    result.sent = 1;
    result.statuses.insert(code, 1);
    result
}

fn exit_code(code: i32) -> u16 {
    u16::try_from(code).unwrap_or(u16::MAX)
}

/// Send `spec`'s requests to `base` for `duration`.
pub async fn run(spec: LoadSpec, base: String, duration: Duration) -> LoadResult {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let result = Arc::new(Mutex::new(LoadResult::default()));
    let spec = Arc::new(spec);
    let mut requests = JoinSet::new();
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / spec.rate_per_sec));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut mix = Mix(SEED);
    let method =
        reqwest::Method::from_bytes(spec.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut n = 0u64;
    while started.elapsed() < duration {
        pace.tick().await;
        let (tag, body) = pick(&spec, n, &mut mix);
        n += 1;
        let request = client
            .request(method.clone(), format!("{base}{}", spec.path))
            .header("content-type", "application/json")
            .body(body);
        let (spec, result) = (Arc::clone(&spec), Arc::clone(&result));
        let (client, base) = (client.clone(), base.clone());
        let request_number = n - 1;
        requests.spawn(async move {
            let (status, captured) = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let captured = match (&spec.capture, accepts(&spec, status)) {
                        (Some(field), true) => response
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| match &v[field.as_str()] {
                                serde_json::Value::String(s) => Some(s.clone()),
                                serde_json::Value::Null => None,
                                other => Some(other.to_string()),
                            }),
                        _ => None,
                    };
                    (status, captured)
                }
                Err(_) => (0, None),
            };
            let follow_up = spec.follow_up.as_ref().filter(|f| {
                f.every > 0 && request_number % f.every == f.every - 1 && captured.is_some()
            });
            let first_of = captured.clone();
            if let Ok(mut result) = result.lock() {
                result.sent += 1;
                *result.statuses.entry(status).or_default() += 1;
                if let Some(value) = captured {
                    result.captured.entry(tag).or_default().push(value);
                }
            }
            if let (Some(follow_up), Some(captured)) = (follow_up, first_of) {
                let status = follow(&client, &base, follow_up, request_number, &captured).await;
                if let Ok(mut result) = result.lock() {
                    *result.follow_ups.entry(status).or_default() += 1;
                }
            }
        });
    }
    while requests.join_next().await.is_some() {}
    result.lock().map(|r| r.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_fields_are_filled_and_json_braces_are_left_alone() {
        let mut mix = Mix(7);
        let body = render(
            r#"{"customer": "c-${n}", "sku": "${choice:A|B}", "q": ${int:1..3}, "x": "${nope}"}"#,
            42,
            &mut mix,
        );
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["customer"], "c-42");
        assert!(["A", "B"].contains(&value["sku"].as_str().unwrap()));
        assert!((1..=3).contains(&value["q"].as_u64().unwrap()));
        assert_eq!(value["x"], "${nope}", "an unknown field stays visible");
    }

    #[test]
    fn every_nth_request_is_the_variant_and_weights_share_the_rest() {
        let spec: LoadSpec = toml::from_str(
            r#"
            name = "orders"
            service = "order"
            rate_per_sec = 1
            path = "/orders"
            body = "plain"
            [[variants]]
            tag = "poison"
            body = "poison"
            every = 10
            [[variants]]
            tag = "rare"
            body = "rare"
            weight = 20
            "#,
        )
        .unwrap();
        let mut mix = Mix(1);
        let tags: Vec<String> = (0..1000).map(|n| pick(&spec, n, &mut mix).0).collect();
        assert_eq!(tags.iter().filter(|t| *t == "poison").count(), 100);
        let rare = tags.iter().filter(|t| *t == "rare").count();
        assert!((120..240).contains(&rare), "about 20 % of 900: {rare}");
    }

    fn command_load(command: &str) -> LoadSpec {
        LoadSpec {
            name: "own".into(),
            service: "order".into(),
            rate_per_sec: 5.0,
            method: "POST".into(),
            path: String::new(),
            body: String::new(),
            variants: Vec::new(),
            accept: Vec::new(),
            capture: None,
            follow_up: None,
            command: vec!["sh".into(), "-c".into(), command.into()],
        }
    }

    #[tokio::test]
    async fn a_command_load_sees_the_services_and_its_exit_code_counts() {
        let urls = vec![("order".to_owned(), "http://127.0.0.1:1".to_owned())];
        let failed = run_command(
            command_load(r#"[ "$CHAOS_ORDER_URL" = http://127.0.0.1:1 ] && [ "$CHAOS_RATE_PER_SEC" = 5 ] && exit 3"#),
            urls.clone(),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(failed.statuses, BTreeMap::from([(3, 1)]));
        // Still running at the end of the load: stopped, which is no failure.
        let stopped = run_command(
            command_load("exec sleep 30"),
            urls,
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(stopped.statuses, BTreeMap::from([(0, 1)]));
    }

    /// A server that answers `POST /things` with a new id and `POST /things/<id>/undo` with
    /// 409 the first time and 202 after, recording the undo paths.
    async fn things_server() -> (String, Arc<Mutex<Vec<String>>>) {
        use axum::extract::Path;
        use axum::http::StatusCode;
        let undone = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = Arc::clone(&undone);
        let app = axum::Router::new()
            .route(
                "/things",
                axum::routing::post(|| async {
                    axum::Json(serde_json::json!({"id": uuid::Uuid::new_v4().to_string()}))
                }),
            )
            .route(
                "/things/{id}/undo",
                axum::routing::post(move |Path(id): Path<String>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let mut seen = seen.lock().unwrap();
                        let first = !seen.contains(&id);
                        seen.push(id);
                        if first {
                            StatusCode::CONFLICT
                        } else {
                            StatusCode::ACCEPTED
                        }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), undone)
    }

    #[tokio::test]
    async fn every_nth_accepted_request_gets_its_follow_up_retried_until_done() {
        let (base, undone) = things_server().await;
        let spec: LoadSpec = toml::from_str(
            r#"
            name = "things"
            service = "things"
            rate_per_sec = 50
            path = "/things"
            capture = "id"
            [follow_up]
            every = 3
            after_secs = 0.01
            path = "/things/${captured}/undo"
            retry = [409]
            attempts = 3
            "#,
        )
        .unwrap();
        let result = run(spec, base, Duration::from_millis(300)).await;
        let sent = result.sent;
        let followed = sent / 3;
        assert!(followed >= 3, "{sent} sent");
        assert_eq!(
            result.follow_ups,
            BTreeMap::from([(202, followed)]),
            "each retried once after its 409"
        );
        let undone = undone.lock().unwrap();
        assert_eq!(undone.len() as u64, followed * 2);
        let captured = result.values(None);
        assert!(
            undone.iter().all(|id| captured.contains(id)),
            "about the captured ids"
        );
    }
}
