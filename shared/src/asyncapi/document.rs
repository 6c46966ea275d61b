//! The AsyncAPI 3.0.0 document: one channel per event type on the topic exchange (address =
//! routing key), its message with the kit's headers and the payload's schema, a `send`
//! operation per publishing service and event type, and a `receive` operation per work queue
//! and event type its bindings deliver.

use std::collections::BTreeSet;

use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::{AsyncApiError, EventDoc, headers};
use crate::Topology;
use crate::bindings::topic_matches;
use crate::message::CONTENT_TYPE_JSON;

/// AsyncAPI's own schema format is a superset of JSON Schema draft-07; schemars writes plain
/// draft-07 when asked, and the document says so on every schema (a Multi Format Schema
/// Object), which @asyncapi/parser validates with its JSON Schema draft-07 parser.
pub const SCHEMA_FORMAT: &str = "application/schema+json;version=draft-07";

/// AMQP bindings version of the AsyncAPI bindings specification used here.
const AMQP_BINDING_VERSION: &str = "0.3.0";

/// The broker the channels are on.
#[derive(Clone, Debug)]
pub struct Server {
    name: String,
    host: String,
    vhost: String,
    description: Option<String>,
}

impl Server {
    /// The RabbitMQ at `host` (`localhost:5672`), named `name` in the document, vhost `/`.
    pub fn new(name: impl Into<String>, host: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            host: host.into(),
            vhost: "/".to_owned(),
            description: None,
        }
    }

    /// The virtual host the exchange and queues are in.
    pub fn vhost(mut self, vhost: impl Into<String>) -> Self {
        self.vhost = vhost.into();
        self
    }

    /// What the server is, for readers.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    fn to_value(&self) -> Value {
        let mut server = json!({
            "host": self.host,
            "pathname": match self.vhost.as_str() {
                "/" => "/".to_owned(),
                vhost => format!("/{vhost}"),
            },
            "protocol": "amqp",
            "protocolVersion": "0.9.1",
        });
        if let Some(description) = &self.description {
            server["description"] = json!(description);
        }
        server
    }
}

/// `rabbitmq` at `localhost:5672`, vhost `/`: the local broker.
impl Default for Server {
    fn default() -> Self {
        Self::new("rabbitmq", "localhost:5672")
    }
}

/// The AsyncAPI 3.0.0 document of a contracts crate, built from its declarations. The same
/// declarations always give the same bytes (keys sorted, schemas inlined), so a committed copy
/// can be compared with what the code describes now.
#[derive(Clone, Debug)]
pub struct Document<'a> {
    title: String,
    version: String,
    description: Option<String>,
    server: Server,
    events: &'a [EventDoc],
    topology: Option<&'a Topology>,
    publishers: &'a [(&'a str, &'a [&'a str])],
}

impl<'a> Document<'a> {
    /// A document titled `title`, of the contract's version `version`, with no events yet, on
    /// the [default server](Server::default).
    pub fn new(title: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            version: version.into(),
            description: None,
            server: Server::default(),
            events: &[],
            topology: None,
            publishers: &[],
        }
    }

    /// What the document describes, for readers.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// The broker the channels are on.
    pub fn server(mut self, server: Server) -> Self {
        self.server = server;
        self
    }

    /// The event types, a channel and a message each: the `ALL` that
    /// [`event_types!`](crate::event_types) writes.
    pub fn events(mut self, events: &'a [EventDoc]) -> Self {
        self.events = events;
        self
    }

    /// The exchange, and a `receive` operation per work queue and event type its bindings
    /// deliver (a wildcard binding expands to every event type it matches).
    pub fn topology(mut self, topology: &'a Topology) -> Self {
        self.topology = Some(topology);
        self
    }

    /// Who publishes what, as `(service, event type names)` pairs: a `send` operation each.
    /// Every name must be one of the [events](Self::events).
    pub fn publishers(mut self, publishers: &'a [(&'a str, &'a [&'a str])]) -> Self {
        self.publishers = publishers;
        self
    }

    /// The document as JSON, keys sorted. Fails when two event types share a name or a
    /// publisher names an event type the document does not have.
    pub fn to_value(&self) -> Result<Value, AsyncApiError> {
        let default_topology = Topology::default();
        let topology = self.topology.unwrap_or(&default_topology);
        let mut channels = Map::new();
        let mut messages = Map::new();
        let mut generator = SchemaSettings::draft07()
            .with(|settings| settings.inline_subschemas = true)
            .into_generator();
        for event in self.events {
            if channels.contains_key(event.name()) {
                return Err(AsyncApiError::DuplicateEvent(event.name().to_owned()));
            }
            let channel = self.channel(event, topology.exchange());
            channels.insert(event.name().to_owned(), channel);
            messages.insert(event.name().to_owned(), message(event, &mut generator));
        }
        let mut operations = self.sends()?;
        operations.extend(self.receives(topology));
        let mut info = json!({ "title": self.title, "version": self.version });
        if let Some(description) = &self.description {
            info["description"] = json!(description);
        }
        let mut document = json!({
            "asyncapi": "3.0.0",
            "info": info,
            "defaultContentType": CONTENT_TYPE_JSON,
            "servers": { self.server.name.as_str(): self.server.to_value() },
            "channels": channels,
            "operations": operations,
            "components": { "messages": messages },
        });
        // A no-op while serde_json keeps maps sorted, which feature unification could change.
        document.sort_all_objects();
        Ok(document)
    }

    /// The document as YAML, keys sorted: what a team commits next to its contracts.
    pub fn to_yaml(&self) -> Result<String, AsyncApiError> {
        Ok(serde_norway::to_string(&self.to_value()?)?)
    }

    /// The channel of `event`: its routing key on the exchange.
    fn channel(&self, event: &EventDoc, exchange: &str) -> Value {
        json!({
            "address": event.name(),
            "description": paragraph(event.doc()),
            "servers": [{ "$ref": format!("#/servers/{}", pointer(&self.server.name)) }],
            "messages": {
                event.name(): {
                    "$ref": format!("#/components/messages/{}", pointer(event.name())),
                },
            },
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": exchange,
                        "type": "topic",
                        "durable": true,
                        "autoDelete": false,
                        "vhost": self.server.vhost,
                    },
                    "bindingVersion": AMQP_BINDING_VERSION,
                },
            },
        })
    }

    fn sends(&self) -> Result<Map<String, Value>, AsyncApiError> {
        let known: BTreeSet<&str> = self.events.iter().map(EventDoc::name).collect();
        let mut operations = Map::new();
        for (service, events) in self.publishers {
            for event in *events {
                if !known.contains(event) {
                    return Err(AsyncApiError::UnknownEvent {
                        service: (*service).to_owned(),
                        event: (*event).to_owned(),
                    });
                }
                operations.insert(format!("{service}.send.{event}"), send(service, event));
            }
        }
        Ok(operations)
    }

    fn receives(&self, topology: &Topology) -> Map<String, Value> {
        let mut operations = Map::new();
        for queue in topology.queues() {
            for event in self.events {
                let bound: Vec<&str> = queue
                    .bindings()
                    .iter()
                    .filter(|pattern| topic_matches(pattern, event.name()))
                    .map(String::as_str)
                    .collect();
                if !bound.is_empty() {
                    let id = format!("{}.receive.{}", queue.name(), event.name());
                    operations.insert(id, receive(queue.name(), event.name(), &bound));
                }
            }
        }
        operations
    }
}

/// The message of `event`: headers and payload schemas, and its AMQP `type`.
fn message(event: &EventDoc, generator: &mut SchemaGenerator) -> Value {
    let description = paragraph(event.doc());
    json!({
        "name": event.name(),
        "title": title(event.name()),
        "summary": first_sentence(&description),
        "description": description,
        "contentType": CONTENT_TYPE_JSON,
        "headers": {
            "schemaFormat": SCHEMA_FORMAT,
            "schema": headers::schema(event.name(), event.sequence()),
        },
        "payload": {
            "schemaFormat": SCHEMA_FORMAT,
            "schema": event.payload_schema(generator).to_value(),
        },
        "bindings": {
            "amqp": {
                "messageType": event.name(),
                "bindingVersion": AMQP_BINDING_VERSION,
            },
        },
    })
}

/// `service` publishes `event` through its outbox: persistent, mandatory (an event no queue
/// takes stays in the outbox), with publisher confirms.
fn send(service: &str, event: &str) -> Value {
    json!({
        "action": "send",
        "channel": { "$ref": format!("#/channels/{}", pointer(event)) },
        "messages": [{ "$ref": message_ref(event) }],
        "summary": format!("{service} publishes {event} through its outbox."),
        "bindings": {
            "amqp": {
                "deliveryMode": 2,
                "mandatory": true,
                "timestamp": true,
                "bindingVersion": AMQP_BINDING_VERSION,
            },
        },
    })
}

/// The consumer of work queue `queue` receives `event`, delivered by its bindings `bound`.
fn receive(queue: &str, event: &str, bound: &[&str]) -> Value {
    json!({
        "action": "receive",
        "channel": { "$ref": format!("#/channels/{}", pointer(event)) },
        "messages": [{ "$ref": message_ref(event) }],
        "summary": format!(
            "{queue} receives {event} on its work queue `{queue}` (bound to {}).",
            bound.iter().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(", ")
        ),
        "bindings": {
            "amqp": { "ack": true, "bindingVersion": AMQP_BINDING_VERSION },
        },
    })
}

/// An operation's message: the one of its channel, as AsyncAPI 3 requires.
fn message_ref(event: &str) -> String {
    format!("#/channels/{}/messages/{}", pointer(event), pointer(event))
}

/// `name` as one JSON Pointer token (RFC 6901).
fn pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// A doc comment (one line per source line) as one paragraph.
fn paragraph(doc: &str) -> String {
    doc.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first sentence of `text`, for a summary.
fn first_sentence(text: &str) -> String {
    match text.find(". ") {
        Some(end) => text[..=end].to_owned(),
        None => text.to_owned(),
    }
}

/// `order.cancel_requested` -> `Order cancel requested`.
fn title(name: &str) -> String {
    let words = name.replace(['.', '_'], " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
