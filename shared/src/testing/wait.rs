use std::future::Future;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(25);

/// Check `condition` until it holds, at most for `deadline`; panics naming `what` when the
/// deadline passes. Returns the value the condition produced.
pub async fn wait_until_async<T, F, Fut>(what: &str, deadline: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until_async`] for a synchronous condition.
pub async fn wait_until<F>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> bool,
{
    wait_until_async(what, deadline, || {
        let holds = condition();
        async move { holds.then_some(()) }
    })
    .await;
}

/// Check `condition` every `poll` until it holds, at most for `deadline`: for callers that
/// report a timeout instead of panicking (the bench, which also needs a finer poll than tests
/// so that the wait does not blur what it times).
pub async fn try_wait_until<F>(
    what: &str,
    deadline: Duration,
    poll: Duration,
    mut condition: F,
) -> Result<(), String>
where
    F: FnMut() -> bool,
{
    let started = Instant::now();
    while !condition() {
        if started.elapsed() >= deadline {
            return Err(format!("timed out after {deadline:?} waiting for {what}"));
        }
        tokio::time::sleep(poll).await;
    }
    Ok(())
}
