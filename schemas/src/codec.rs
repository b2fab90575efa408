//! The Confluent wire format: magic byte 0, the schema id as a big-endian u32, Avro binary.
//!
//! Encoding registers the record's schema under `<topic>-value` on first use (the registry
//! answers with the existing id when it already has it) and caches the id; decoding fetches
//! unknown writer schemas by id and caches them. Errors say which of the three things went wrong
//! — framing, the schema id, or the Avro body — because each goes to the dead-letter topic with
//! a different reason, while an unreachable registry is retried, never dead-lettered.

use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use crate::Record;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("value is not in the Confluent wire format: {0}")]
    NotFramed(String),
    #[error("schema id {id} is unknown to the schema registry: {detail}")]
    UnknownSchema { id: u32, detail: String },
    #[error("Avro body does not decode with schema id {id}: {detail}")]
    BadAvro { id: u32, detail: String },
    #[error("record with schema id {id} does not match {expected}: {detail}")]
    Mismatch {
        id: u32,
        expected: &'static str,
        detail: String,
    },
    #[error("cannot encode {record} for topic {topic}: {detail}")]
    Encode {
        record: &'static str,
        topic: &'static str,
        detail: String,
    },
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
}

impl CodecError {
    /// Whether retrying later may succeed (the registry was unreachable). Anything else is a
    /// property of the bytes and belongs in the dead-letter topic.
    pub fn is_retriable(&self) -> bool {
        matches!(self, CodecError::RegistryUnavailable(_))
    }
}

/// The schema id of a Confluent-framed value, if it is framed at all.
pub fn schema_id(bytes: &[u8]) -> Result<u32, CodecError> {
    match bytes {
        [0, a, b, c, d, ..] if bytes.len() > 5 => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        [0, ..] => Err(CodecError::NotFramed(format!("only {} bytes", bytes.len()))),
        [magic, ..] => Err(CodecError::NotFramed(format!(
            "magic byte is {magic}, expected 0"
        ))),
        [] => Err(CodecError::NotFramed("empty value".into())),
    }
}

/// Encodes and decodes [`Record`]s through the schema registry. Cheap to share behind an `Arc`.
pub struct Codec {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
}

impl Codec {
    pub fn new(registry: SrSettings) -> Self {
        Self {
            encoder: AvroEncoder::new(registry.clone()),
            decoder: AvroDecoder::new(registry),
        }
    }

    /// The subject strategy for `R`: TopicNameStrategy with the schema supplied, so the first
    /// encode registers it.
    fn strategy<R: Record>() -> SubjectNameStrategy {
        SubjectNameStrategy::TopicNameStrategyWithSchema(
            R::TOPIC.to_owned(),
            false,
            SuppliedSchema::new(
                Some(R::NAME.to_owned()),
                SchemaType::Avro,
                R::SCHEMA.to_owned(),
            ),
        )
    }

    pub async fn encode<R: Record>(&self, record: &R) -> Result<Vec<u8>, CodecError> {
        self.encoder
            .encode_struct(record, &Self::strategy::<R>())
            .await
            .map_err(|e| {
                if e.retriable {
                    CodecError::RegistryUnavailable(describe(&e))
                } else {
                    CodecError::Encode {
                        record: R::NAME,
                        topic: R::TOPIC,
                        detail: describe(&e),
                    }
                }
            })
    }

    pub async fn decode<R: Record>(&self, bytes: &[u8]) -> Result<R, CodecError> {
        let id = schema_id(bytes)?;
        let decoded = self.decoder.decode(Some(bytes)).await.map_err(|e| {
            let detail = describe(&e);
            if e.retriable {
                CodecError::RegistryUnavailable(detail)
            } else if detail.contains("schema") && !detail.contains("decod") {
                CodecError::UnknownSchema { id, detail }
            } else {
                CodecError::BadAvro { id, detail }
            }
        })?;
        apache_avro::from_value::<R>(&decoded.value).map_err(|e| CodecError::Mismatch {
            id,
            expected: R::NAME,
            detail: e.to_string(),
        })
    }
}

fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_is_checked_before_the_registry_is_asked() {
        assert_eq!(schema_id(&[0, 0, 0, 1, 2, 9]).ok(), Some(258));
        assert!(matches!(schema_id(&[]), Err(CodecError::NotFramed(_))));
        assert!(
            matches!(schema_id(&[1, 0, 0, 0, 1, 9]), Err(CodecError::NotFramed(m)) if m.contains("magic byte is 1"))
        );
        assert!(
            matches!(schema_id(&[0, 0, 0]), Err(CodecError::NotFramed(m)) if m.contains("3 bytes"))
        );
    }
}
