/// The value of the sample `name` whose labels include every one of `labels`, in a Prometheus
/// or OpenMetrics text exposition; `None` if there is no such sample.
pub fn metric_value(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let matches = labels.iter().all(|(key, want)| {
                label_text
                    .split(',')
                    .any(|pair| pair == format!("{key}=\"{want}\""))
            });
            matches.then(|| value.parse().ok()).flatten()
        })
}

/// `GET <base>/metrics` as text.
pub async fn scrape(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .expect("metrics text")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_labels() {
        let text = "# TYPE msgkit_consumed counter\n\
                    msgkit_consumed_total{queue=\"a\",outcome=\"ack\"} 3\n\
                    msgkit_consumed_total{queue=\"b\",outcome=\"ack\"} 5\n\
                    msgkit_outbox_pending{service=\"order\"} 0\n";
        assert_eq!(
            metric_value(text, "msgkit_consumed_total", &[("queue", "b")]),
            Some(5.0)
        );
        assert_eq!(metric_value(text, "msgkit_outbox_pending", &[]), Some(0.0));
        assert_eq!(
            metric_value(text, "msgkit_consumed_total", &[("queue", "c")]),
            None
        );
    }
}
