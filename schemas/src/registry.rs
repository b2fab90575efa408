//! Schema registration through the Confluent-compatible REST API.
//!
//! `register_all` is idempotent: it sets BACKWARD compatibility on every subject and registers
//! the current schema (the registry returns the existing id for a schema it already has). A
//! schema change that would break consumers is refused by the registry with 409, and reported
//! here naming the subject.

use serde::Deserialize;
use serde_json::json;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry at {url} unreachable: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error(
        "subject {subject}: the new schema is incompatible with the registered versions ({detail})"
    )]
    Incompatible { subject: String, detail: String },
    #[error("subject {subject}: registry answered {status}: {detail}")]
    Rejected {
        subject: String,
        status: u16,
        detail: String,
    },
}

/// The subject of a topic's values under TopicNameStrategy.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// A thin client of the registry's subject and config endpoints.
#[derive(Clone)]
pub struct Registry {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct IdAnswer {
    id: u32,
}

impl Registry {
    pub fn new(base_url: &str) -> Self {
        Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        subject: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, RegistryError> {
        let response = request
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .send()
            .await
            .map_err(|source| RegistryError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let detail = body
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("no message")
            .to_owned();
        let subject = subject.to_owned();
        Err(if status.as_u16() == 409 {
            RegistryError::Incompatible { subject, detail }
        } else {
            RegistryError::Rejected {
                subject,
                status: status.as_u16(),
                detail,
            }
        })
    }

    /// Sets the subject's compatibility level (e.g. `BACKWARD`).
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), RegistryError> {
        let url = format!("{}/config/{subject}", self.base);
        self.send(
            subject,
            self.http.put(url).json(&json!({ "compatibility": level })),
        )
        .await?;
        Ok(())
    }

    /// Registers an Avro schema under `subject` and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let body = json!({ "schema": schema, "schemaType": "AVRO" });
        let answer = self.send(subject, self.http.post(url).json(&body)).await?;
        serde_json::from_value::<IdAnswer>(answer.clone())
            .map(|a| a.id)
            .map_err(|_| RegistryError::Rejected {
                subject: subject.to_owned(),
                status: 200,
                detail: format!("unexpected answer {answer}"),
            })
    }

    /// Sets BACKWARD compatibility and registers the schema of every topic; returns
    /// `(topic, schema id)` pairs.
    pub async fn register_all(&self) -> Result<Vec<(&'static str, u32)>, RegistryError> {
        let mut ids = Vec::with_capacity(crate::TOPICS.len());
        for (topic, schema) in crate::TOPICS {
            let subject = value_subject(topic);
            self.set_compatibility(&subject, "BACKWARD").await?;
            let id = self.register(&subject, schema).await?;
            tracing::debug!(%subject, id, "schema registered");
            ids.push((*topic, id));
        }
        Ok(ids)
    }
}
