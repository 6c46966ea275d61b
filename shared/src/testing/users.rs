//! Broker users made for one test, with permissions on the test's vhost only: how a test shows
//! what a narrow user (a service's, as `deploy/rabbitmq/definitions.json` gives it) may and may
//! not do.

use super::{TestBroker, block_on_cleanup, unique_name};

/// A user's permissions on a vhost: regular expressions over exchange and queue names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    /// Declare and delete.
    pub configure: String,
    /// Publish to (exchanges), bind to (queues).
    pub write: String,
    /// Consume (queues), bind from (exchanges).
    pub read: String,
}

/// A user of the test's vhost, deleted when dropped.
#[derive(Debug)]
pub struct TestUser {
    /// Its name (unique to the test).
    pub name: String,
    /// Its password.
    pub password: String,
    /// Its AMQP URL on the test's vhost.
    pub amqp_url: String,
    admin: (String, String, String),
}

impl TestBroker {
    /// A new user named after `role` with `permissions` on this vhost, and no tags (no
    /// management API).
    pub async fn add_user(&self, role: &str, permissions: &Permissions) -> TestUser {
        let name = unique_name(&format!("msgkit_test_user_{role}_"));
        let password = format!("{name}-password");
        self.api_call(
            reqwest::Method::PUT,
            &format!("users/{name}"),
            Some(serde_json::json!({"password": password, "tags": ""})),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot create user {name}: {e}"));
        self.api_call(
            reqwest::Method::PUT,
            &format!("permissions/{}/{name}", self.vhost()),
            Some(serde_json::json!({
                "configure": permissions.configure,
                "write": permissions.write,
                "read": permissions.read,
            })),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot set the permissions of {name}: {e}"));
        TestUser {
            amqp_url: self.amqp_url_as(&name, &password),
            name,
            password,
            admin: self.admin(),
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let (api, user, password) = self.admin.clone();
        let name = self.name.clone();
        block_on_cleanup(async move {
            let deleted = reqwest::Client::new()
                .delete(format!("{api}/api/users/{name}"))
                .basic_auth(user, Some(password))
                .send()
                .await;
            if let Err(error) = deleted {
                eprintln!("could not delete test user {name}: {error}");
            }
        });
    }
}
