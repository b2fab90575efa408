//! The Confluent wire format: magic byte 0, the schema id as a big-endian u32, Avro binary.
//!
//! Encoding registers the record's schema under `<topic>-value` on first use (the registry
//! answers with the existing id when it already has it) and caches the id; decoding fetches
//! unknown writer schemas by id and caches them. Errors say which of the three things went wrong
//! — framing, the schema id, or the Avro body — because each goes to the dead-letter topic with
//! a different reason, while an unreachable registry is retried, never dead-lettered.
//!
//! **Fast path.** After the first encode of a type (which registers its schema and learns the
//! id), records are written straight from serde to Avro bytes with the type's parsed schema
//! (`write_ser`), and values whose writer schema is the type's own schema are read straight into
//! the type (`read_deser`) — no intermediate `apache_avro::Value`, which cost more than the rest
//! of the pipeline's per-record work. Any other writer schema (an older version, another
//! producer) takes the general path through the registry client, with schema resolution.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::{SrSettings, get_schema_by_id};
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

/// A record type's own schema, parsed once per process with a writer and a reader over it.
/// Leaked on purpose: one per record type (a fixed, small set) for the life of the process,
/// which lets the writer and reader borrow the schema without a self-referential struct.
struct Compiled {
    writer: GenericDatumWriter<'static>,
    reader: GenericDatumReader<'static>,
    canonical: String,
}

fn compiled<R: Record>() -> Result<&'static Compiled, String> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, &'static Compiled>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = cache.get(R::NAME) {
        return Ok(c);
    }
    let schema: &'static Schema = Box::leak(Box::new(
        Schema::parse_str(R::SCHEMA).map_err(|e| e.to_string())?,
    ));
    let compiled: &'static Compiled = Box::leak(Box::new(Compiled {
        writer: GenericDatumWriter::builder(schema)
            .validate(false)
            .build()
            .map_err(|e| e.to_string())?,
        reader: GenericDatumReader::builder(schema)
            .build()
            .map_err(|e| e.to_string())?,
        canonical: schema.canonical_form(),
    }));
    cache.insert(R::NAME, compiled);
    Ok(compiled)
}

/// Encodes and decodes [`Record`]s through the schema registry. Cheap to share behind an `Arc`.
pub struct Codec {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    registry: SrSettings,
    /// Record type → the id its schema is registered under (learned on its first encode).
    ids: Mutex<HashMap<&'static str, u32>>,
    /// (writer schema id, record type) → whether the writer schema is the type's own schema.
    own_schema: Mutex<HashMap<(u32, &'static str), bool>>,
}

impl Codec {
    pub fn new(registry: SrSettings) -> Self {
        Self {
            encoder: AvroEncoder::new(registry.clone()),
            decoder: AvroDecoder::new(registry.clone()),
            registry,
            ids: Mutex::default(),
            own_schema: Mutex::default(),
        }
    }

    fn known_id<R: Record>(&self) -> Option<u32> {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(R::NAME)
            .copied()
    }

    /// Whether values written with schema `id` can be read with `R`'s own schema directly.
    async fn is_own_schema<R: Record>(&self, id: u32) -> Result<bool, CodecError> {
        let key = (id, R::NAME);
        if let Some(known) = self
            .own_schema
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(*known);
        }
        let own = match get_schema_by_id(id, &self.registry).await {
            Ok(registered) => match (Schema::parse_str(&registered.schema), compiled::<R>()) {
                (Ok(writer), Ok(c)) => writer.canonical_form() == c.canonical,
                _ => false,
            },
            Err(e) if e.retriable => return Err(CodecError::RegistryUnavailable(describe(&e))),
            // Unknown ids and the like: the general path reports them precisely.
            Err(_) => return Ok(false),
        };
        self.own_schema
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, own);
        Ok(own)
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
        let encode_error = |detail: String| CodecError::Encode {
            record: R::NAME,
            topic: R::TOPIC,
            detail,
        };
        if let Some(id) = self.known_id::<R>() {
            let compiled = compiled::<R>().map_err(encode_error)?;
            let mut bytes = Vec::with_capacity(256);
            bytes.push(0);
            bytes.extend_from_slice(&id.to_be_bytes());
            compiled
                .writer
                .write_ser(&mut bytes, record)
                .map_err(|e| encode_error(e.to_string()))?;
            return Ok(bytes);
        }
        let bytes = self.encode_registering(record).await?;
        if let Ok(id) = schema_id(&bytes) {
            self.ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(R::NAME, id);
            // Registered from R's own schema text: what we write, we read directly.
            self.own_schema
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((id, R::NAME), true);
        }
        Ok(bytes)
    }

    /// The general path: registers the schema if needed, through the registry client.
    async fn encode_registering<R: Record>(&self, record: &R) -> Result<Vec<u8>, CodecError> {
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
        if self.is_own_schema::<R>(id).await? {
            let compiled = compiled::<R>().map_err(|detail| CodecError::Mismatch {
                id,
                expected: R::NAME,
                detail,
            })?;
            let mut body = &bytes[5..];
            return compiled
                .reader
                .read_deser::<R>(&mut body)
                .map_err(|e| CodecError::BadAvro {
                    id,
                    detail: e.to_string(),
                });
        }
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
