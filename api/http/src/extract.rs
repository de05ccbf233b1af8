//! Request extractors that answer bad input with the `/v1` error shape (never axum's
//! plain-text rejections): JSON bodies with the failing field's path, the command headers
//! (`Idempotency-Key`, `If-Match`, `X-Correlation-Id`), query strings and path ids.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;
use jobsource_app::service::{fingerprint, CommandContext};

/// The request's correlation id (set by the correlation middleware).
#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);

/// A JSON body, with the raw bytes kept for the idempotency fingerprint.
pub struct JsonBody<T> {
    /// Parsed body.
    pub value: T,
    /// Raw body.
    pub raw: Bytes,
}

/// Reads the body, mapping a too-large body to 413.
async fn body_bytes(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: state.config().body_limit,
            }
        } else {
            ApiError::malformed("body", "the request body could not be read")
        }
    })
}

/// Parses JSON, naming the path of the field that failed.
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(raw);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let text = inner.to_string();
        // serde names a missing field only in its message: "missing field `type` at ...".
        let missing = text
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        let field = match (path.as_str(), missing) {
            ("." | "", Some(m)) => m,
            ("." | "", None) => "body".to_owned(),
            (p, Some(m)) => format!("{p}.{m}"),
            (p, None) => p.to_owned(),
        };
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("invalid JSON: {inner}")
        } else {
            inner.to_string()
        };
        ApiError::malformed(field, message)
    })
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let raw = body_bytes(req, state).await?;
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::malformed("body", "a JSON body is required"));
        }
        Ok(JsonBody {
            value: parse_json(&raw)?,
            raw,
        })
    }
}

/// A JSON body that may be absent (an empty body or JSON `null` = `T::default()`, as the
/// document's optional request bodies say).
pub struct OptionalJsonBody<T> {
    /// Parsed (or default) body.
    pub value: T,
    /// Raw body.
    pub raw: Bytes,
}

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let raw = body_bytes(req, state).await?;
        let text = raw.trim_ascii();
        let value = if text.is_empty() || text == b"null" {
            T::default()
        } else {
            parse_json(&raw)?
        };
        Ok(OptionalJsonBody { value, raw })
    }
}

/// `Idempotency-Key`, `If-Match` and the correlation id of a command request.
#[derive(Debug, Clone)]
pub struct CommandHeaders {
    /// Correlation id.
    pub correlation_id: String,
    /// Client key, if sent.
    pub idempotency_key: Option<String>,
    /// Expected version, if sent.
    pub if_match: Option<u64>,
}

impl CommandHeaders {
    /// The command context for a request with body `raw` on route `route` (the key's
    /// fingerprint covers both, so one key cannot be replayed on another route).
    pub fn context(&self, route: &str, raw: &[u8]) -> CommandContext {
        let mut ctx = CommandContext {
            correlation_id: self.correlation_id.clone(),
            expected_version: self.if_match,
            actor: Some("api".into()),
            ..CommandContext::default()
        };
        if let Some(key) = &self.idempotency_key {
            let mut material = Vec::with_capacity(route.len() + 1 + raw.len());
            material.extend_from_slice(route.as_bytes());
            material.push(0);
            material.extend_from_slice(raw);
            ctx.idempotency = Some(jobsource_eventstore::Idempotency::new(
                key.clone(),
                fingerprint(&material),
            ));
        }
        ctx
    }
}

impl FromRequestParts<AppState> for CommandHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        let header = |name: &str| -> Result<Option<String>, ApiError> {
            match parts.headers.get(name) {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .map(|s| Some(s.trim().to_owned()))
                    .map_err(|_| ApiError::malformed(name, "must be visible ASCII")),
            }
        };
        let idempotency_key = match header("idempotency-key")? {
            Some(k)
                if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                return Err(ApiError::malformed(
                    "Idempotency-Key",
                    "must be 1 to 255 visible ASCII characters without spaces",
                ))
            }
            other => other,
        };
        let if_match = match header("if-match")? {
            None => None,
            Some(v) => Some(v.trim_matches('"').parse::<u64>().map_err(|_| {
                ApiError::malformed(
                    "If-Match",
                    "must be the version number you last saw, e.g. 3",
                )
            })?),
        };
        let correlation_id = parts
            .extensions
            .get::<CorrelationId>()
            .map(|c| c.0.clone())
            .unwrap_or_else(|| Uuid::now_v7().to_string());
        Ok(CommandHeaders {
            correlation_id,
            idempotency_key,
            if_match,
        })
    }
}

/// A query string, rejected as 400 naming the problem.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, s)
            .await
            .map(|Query(q)| QueryParams(q))
            .map_err(|e| ApiError::malformed("query", e.body_text()))
    }
}

/// A UUID path parameter, rejected as 400 naming it.
pub struct PathId(pub Uuid);

impl FromRequestParts<AppState> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        Path::<Uuid>::from_request_parts(parts, s)
            .await
            .map(|Path(id)| PathId(id))
            .map_err(|_| ApiError::malformed("id", "must be a UUID"))
    }
}
