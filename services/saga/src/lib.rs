//! A harness that runs the whole saga (order, inventory, payment, notify) in one test process,
//! each service in its own schema of one fresh database, all on one fresh vhost: the same
//! layout as `make run`, isolated per test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a panic is the report

use std::time::Duration;

use msgkit::Shutdown;
use msgkit::broker::BrokerSettings;
use msgkit::service::{Service, ServiceError, ServiceSettings};
use msgkit::testing::{Probe, TestBroker, TestDatabase, service_settings, wait_until_async};
use secrecy::SecretString;
use serde_json::Value;
use sqlx::PgPool;

/// How long a test waits for the saga to settle.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// What to change from a plain run: settings, as an operator sets them, over the harness's
/// fast defaults (`msgkit::testing::test_config`): e.g. `("INVENTORY_FAULT_FAIL_FIRST_ATTEMPTS",
/// "2")` for the inventory consumer alone, `("RETRY_MAX_ATTEMPTS", "3")` for every consumer.
/// The gateway simulator answers at once unless `GATEWAY_LATENCY_MS` says otherwise.
pub type SagaSettings<'a> = &'a [(&'a str, &'a str)];

/// The four services, running.
pub struct Saga {
    /// Base URL of the order API.
    pub api: String,
    /// Base URL of each service's HTTP endpoints (`/metrics`, `/readyz`), by service name.
    pub urls: std::collections::HashMap<&'static str, String>,
    /// HTTP client.
    pub client: reqwest::Client,
    /// The test's vhost.
    pub broker: TestBroker,
    /// One pool per service schema.
    pub orders: PgPool,
    /// The inventory schema.
    pub inventory: PgPool,
    /// The payment schema.
    pub payment: PgPool,
    /// The notify schema.
    pub notify: PgPool,
    shutdown: Shutdown,
    /// The inventory service's own stop signal and task, to restart it alone.
    inventory_run: Option<(Shutdown, tokio::task::JoinHandle<Result<(), ServiceError>>)>,
    /// The other services' runs, awaited by [`Saga::stop`]: `run_until_stopped` spawns its
    /// tasks on a child of the shutdown, which the root's `wait_for_tasks` does not see.
    runs: Vec<tokio::task::JoinHandle<Result<(), ServiceError>>>,
    settings: Vec<(String, String)>,
    transport: Transport,
    db: TestDatabase,
}

/// How the services reach the broker and the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Plain,
    Tls,
}

impl Saga {
    /// Start all four services with `settings`.
    pub async fn start(settings: SagaSettings<'_>) -> Self {
        Self::start_on(settings, Transport::Plain).await
    }

    /// Start all four services with `settings`, each connecting to the broker (`amqps://`,
    /// the stack's TLS listener) and to the database (`sslmode=verify-full`) over TLS, both
    /// verified against the stack's CA, configured as an operator would (`AMQP_URL`,
    /// `AMQP_TLS_CA_CERT_FILE`, `DATABASE_URL`).
    pub async fn start_over_tls(settings: SagaSettings<'_>) -> Self {
        Self::start_on(settings, Transport::Tls).await
    }

    async fn start_on(settings: SagaSettings<'_>, transport: Transport) -> Self {
        // Service logs appear in a failing test's captured output (RUST_LOG to change).
        let _ = msgkit::telemetry::init("saga-test");
        let db = TestDatabase::create().await;
        let broker = TestBroker::create().await;
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        apply_topology(&broker, &settings).await;
        let configure =
            |name: &str, schema: &str| configured(&settings, name, schema, &db, &broker, transport);

        let order = order::startup::build(configure("order", "orders"))
            .await
            .expect("start order");
        let api = format!("http://{}", order.local_addr().unwrap());
        let inventory = inventory::startup::build(configure("inventory", "inventory"))
            .await
            .expect("start inventory");
        let payment_service = payment::startup::build(configure("payment", "payment"))
            .await
            .expect("start payment");
        let notify = notify::build(configure("notify", "notify"))
            .await
            .expect("start notify");

        let urls = [
            ("order", &order),
            ("inventory", &inventory),
            ("payment", &payment_service),
            ("notify", &notify),
        ]
        .into_iter()
        .map(|(name, service)| (name, format!("http://{}", service.local_addr().unwrap())))
        .collect();
        let pools = [
            order.pool(),
            inventory.pool(),
            payment_service.pool(),
            notify.pool(),
        ]
        .map(Clone::clone);
        let shutdown = Shutdown::new();
        let runs = [order, payment_service, notify]
            .into_iter()
            .map(|service| tokio::spawn(service.run_until_stopped(shutdown.clone())))
            .collect();
        let inventory_shutdown = shutdown.child();
        let inventory_task = tokio::spawn(inventory.run_until_stopped(inventory_shutdown.clone()));
        let [orders, inventory, payment, notify] = pools;
        Self {
            api,
            urls,
            client: reqwest::Client::new(),
            broker,
            orders,
            inventory,
            payment,
            notify,
            shutdown,
            inventory_run: Some((inventory_shutdown, inventory_task)),
            runs,
            settings,
            transport,
            db,
        }
    }

    /// Settings for another service of the test's system (`rebate`, say) in schema `schema` of
    /// the same database and vhost, with the same settings as the saga's services.
    pub fn settings_for(&self, name: &str, schema: &str) -> ServiceSettings {
        configured(
            &self.settings,
            name,
            schema,
            &self.db,
            &self.broker,
            self.transport,
        )
    }

    /// Stop the inventory service (gracefully) and start it again with `settings` instead of
    /// the ones it started with, as an operator would after fixing a failing consumer.
    pub async fn restart_inventory(&mut self, settings: SagaSettings<'_>) {
        if let Some((stop, task)) = self.inventory_run.take() {
            stop.trigger();
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("inventory stops promptly")
                .expect("inventory task")
                .expect("inventory stopped cleanly");
        }
        self.settings = settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let settings = configured(
            &self.settings,
            "inventory",
            "inventory",
            &self.db,
            &self.broker,
            self.transport,
        );
        let service: Service = inventory::startup::build(settings)
            .await
            .expect("restart inventory");
        // The stopped service closed its pool; read through the new one.
        self.inventory = service.pool().clone();
        let url = format!("http://{}", service.local_addr().unwrap());
        self.urls.insert("inventory", url);
        let stop = self.shutdown.child();
        let task = tokio::spawn(service.run_until_stopped(stop.clone()));
        self.inventory_run = Some((stop, task));
    }

    /// Place an order; returns its id.
    pub async fn place_order(&self, customer: &str, items: &[(&str, u32)]) -> String {
        let items: Vec<Value> = items
            .iter()
            .map(|(sku, quantity)| serde_json::json!({"sku": sku, "quantity": quantity}))
            .collect();
        let response = self
            .client
            .post(format!("{}/orders", self.api))
            .json(&serde_json::json!({"customer_id": customer, "items": items}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        body["order_id"].as_str().unwrap().to_owned()
    }

    /// `GET /orders/{id}`.
    pub async fn order(&self, order_id: &str) -> Value {
        self.client
            .get(format!("{}/orders/{order_id}", self.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Wait until the order is final; returns the order.
    pub async fn wait_final(&self, order_id: &str) -> Value {
        wait_until_async(
            &format!("order {order_id} to reach a final state"),
            DEADLINE,
            || async {
                let order = self.order(order_id).await;
                (order["status"] != "pending").then_some(order)
            },
        )
        .await
    }

    /// Units of `sku` available.
    pub async fn stock(&self, sku: &str) -> i32 {
        sqlx::query_scalar("SELECT available FROM stock WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.inventory)
            .await
            .unwrap()
    }

    /// The gateway's charges for an order, as (outcome, amount).
    pub async fn charges(&self, order_id: &str) -> Vec<(String, i64)> {
        sqlx::query_as(
            "SELECT outcome, amount_cents FROM gateway_charges WHERE idempotency_key = $1",
        )
        .bind(format!("order-{order_id}"))
        .fetch_all(&self.payment)
        .await
        .unwrap()
    }

    /// The notifications sent for an order (their statuses).
    pub async fn notifications(&self, order_id: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT status FROM notifications WHERE order_id = $1::uuid")
            .bind(order_id)
            .fetch_all(&self.notify)
            .await
            .unwrap()
    }

    /// Wait until `count` notifications exist for the order.
    pub async fn wait_notifications(&self, order_id: &str, count: usize) -> Vec<String> {
        wait_until_async(
            &format!("{count} notification(s) for {order_id}"),
            DEADLINE,
            || async {
                let sent = self.notifications(order_id).await;
                (sent.len() >= count).then_some(sent)
            },
        )
        .await
    }

    /// Start seeing every event published on the test's vhost: call it before placing orders,
    /// and hand it to [`Saga::assert_published_as_declared`] once the saga has settled.
    pub async fn watch_events(&self) -> Probe {
        self.broker.probe("events", "#").await
    }

    /// Every event the services published (every row of their outboxes, all published first)
    /// was seen on `events` with the `app_id` of the service whose outbox it left, and every
    /// (app_id, type) pair is declared in `contracts::PUBLISHERS`, the table `msgkit asyncapi`
    /// describes the publishers from. Returns the pairs seen, for a test to say what it covered.
    pub async fn assert_published_as_declared(
        &self,
        events: &mut Probe,
    ) -> std::collections::BTreeSet<(String, String)> {
        let outboxes = [
            ("order", &self.orders),
            ("inventory", &self.inventory),
            ("payment", &self.payment),
            ("notify", &self.notify),
        ];
        let mut rows = std::collections::HashMap::new();
        for (service, pool) in outboxes {
            wait_until_async(
                &format!("every row of {service}'s outbox published"),
                DEADLINE,
                || async {
                    let unpublished: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM msgkit_outbox WHERE published_at IS NULL",
                    )
                    .fetch_one(pool)
                    .await
                    .unwrap();
                    (unpublished == 0).then_some(())
                },
            )
            .await;
            let ids: Vec<String> = sqlx::query_scalar("SELECT id::text FROM msgkit_outbox")
                .fetch_all(pool)
                .await
                .unwrap();
            rows.extend(ids.into_iter().map(|id| (id, service)));
        }
        let seen = events
            .collect_until("every outbox row on the events exchange", DEADLINE, |got| {
                let ids: std::collections::HashSet<&str> = got
                    .iter()
                    .filter_map(|d| d.properties.message_id().as_ref().map(|id| id.as_str()))
                    .collect();
                rows.keys().all(|id| ids.contains(id.as_str()))
            })
            .await;
        let mut pairs = std::collections::BTreeSet::new();
        for delivery in &seen {
            let properties = &delivery.properties;
            let text = |value: &Option<lapin::types::ShortString>| {
                value
                    .as_ref()
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default()
            };
            let id = text(properties.message_id());
            let Some(service) = rows.get(&id) else {
                continue; // published by the test itself, not by a service
            };
            let (app_id, kind) = (text(properties.app_id()), text(properties.kind()));
            assert_eq!(app_id, *service, "{kind} {id} left {service}'s outbox");
            assert!(
                contracts::publishes(&app_id, &kind),
                "{app_id} published {kind}, which contracts::PUBLISHERS does not declare \
                 (add it there, then regenerate docs/asyncapi.yaml)"
            );
            pairs.insert((app_id, kind));
        }
        pairs
    }

    /// Stop every service and wait until each has finished what it had in flight (a test that
    /// reads spans or logs after this sees all of them).
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        let mut runs = std::mem::take(&mut self.runs);
        runs.extend(self.inventory_run.take().map(|(_, task)| task));
        let stopped = async {
            for run in runs {
                run.await
                    .expect("a service's run does not panic")
                    .expect("a service stops cleanly");
            }
            self.shutdown.wait_for_tasks().await;
        };
        tokio::time::timeout(DEADLINE, stopped)
            .await
            .expect("services stop promptly");
    }
}

/// Service `name`'s settings in this test's database and vhost: the harness's fast defaults,
/// an instant gateway, then the test's own `settings`.
/// The whole topology, declared as `msgkit topology apply` (and a deployment) does before the
/// services start: each service then declares only its own part (`TOPOLOGY_DECLARE=own`),
/// as it does under a broker user with rights on nothing else.
async fn apply_topology(broker: &TestBroker, settings: &[(String, String)]) {
    let source =
        msgkit::testing::test_config(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut topology = contracts::topology();
    if let Some(archive) = msgkit::topology::Archive::from_config(&source)
        .expect("the test's archive settings are valid")
    {
        topology = topology.with_archive(archive);
    }
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.expect("a channel");
    topology
        .declare(&channel)
        .await
        .expect("the topology applies");
    let _ = connection.close(200, "topology applied".into()).await;
}

fn configured(
    settings: &[(String, String)],
    name: &str,
    schema: &str,
    db: &TestDatabase,
    broker: &TestBroker,
    transport: Transport,
) -> ServiceSettings {
    let mut service = service_settings(name, schema, db, broker.settings(&format!("{name}-test")));
    if transport == Transport::Tls {
        let ca = msgkit::testing::tls::ca_file();
        let source = msgkit::testing::test_config([
            ("AMQP_URL", broker.amqps_url().as_str()),
            ("AMQP_TLS_CA_CERT_FILE", ca.to_str().unwrap()),
            ("DATABASE_URL", db.tls_url(&ca).as_str()),
        ])
        .with_files_read()
        .expect("the stack's CA is readable (scripts/stack.sh up)");
        let mut tls = BrokerSettings::from_config(&source, format!("{name}-test"))
            .expect("valid broker TLS settings");
        tls.reconnect_initial = service.broker.reconnect_initial;
        tls.reconnect_max = service.broker.reconnect_max;
        service.broker = tls;
        service.database.url = SecretString::from(db.tls_url(&ca));
    }
    service.source.set("GATEWAY_LATENCY_MS", "0");
    for (key, value) in settings {
        service.source.set(key, value);
    }
    // The harness applied the topology (apply_topology): each service declares its own part.
    service.declare_own_only = true;
    // Settings derived when the source was first read, and changed by the test's.
    service.archive = msgkit::topology::Archive::from_config(&service.source)
        .expect("the test's archive settings are valid");
    service
}
