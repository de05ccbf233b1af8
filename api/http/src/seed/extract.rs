//! Extractors that answer unreadable input in the seed's error shape (never axum's plain
//! text rejections, never the `/v1` shape): JSON bodies, query strings and path ids.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::SeedError;
use crate::error::ApiError;
use crate::extract::{parse_json, CorrelationId};
use crate::AppState;
use jobsource_app::service::CommandContext;

/// A request body or query of the seed API, and how its route reports one it cannot read.
pub trait SeedRequest: DeserializeOwned {
    /// The route's failure code (`JOB_SUBMISSION_FAILED`, `WORKFLOW_CREATION_FAILED`, ...).
    const FAILED_CODE: &'static str;
    /// First word of the message, `"<Subject> validation failed: ..."` (the seed's form).
    const SUBJECT: &'static str;
}

/// A JSON body; an empty body reads as `{}` (the seed's `express.json()` gave handlers
/// `{}` there, and every field here is optional).
pub struct SeedJson<T>(pub T);

impl<T: SeedRequest> FromRequest<AppState> for SeedJson<T> {
    type Rejection = SeedError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let raw = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                SeedError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    format!(
                        "request body exceeds the limit of {} bytes",
                        state.config().body_limit
                    ),
                )
            } else {
                SeedError::validation(
                    T::FAILED_CODE,
                    T::SUBJECT,
                    "body: the request body could not be read",
                )
            }
        })?;
        // An empty body or JSON `null` is an empty object (Express's `req.body` is `{}`).
        let text = raw.trim_ascii();
        let raw: &[u8] = if text.is_empty() || text == b"null" {
            b"{}"
        } else {
            &raw
        };
        // The `/v1` parser names the failing field's path (`steps[1].depends_on[0]`).
        parse_json::<T>(raw).map(SeedJson).map_err(|e| match e {
            ApiError::Malformed { field, message } => {
                SeedError::validation(T::FAILED_CODE, T::SUBJECT, format!("{field}: {message}"))
            }
            other => {
                let (status, detail) = other.parts();
                SeedError::new(status, detail.code, detail.message)
            }
        })
    }
}

/// A query string.
pub struct SeedQuery<T>(pub T);

impl<T: SeedRequest + Send> FromRequestParts<AppState> for SeedQuery<T> {
    type Rejection = SeedError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, s)
            .await
            .map(|Query(q)| SeedQuery(q))
            .map_err(|e| SeedError::validation(T::FAILED_CODE, T::SUBJECT, e.body_text()))
    }
}

/// The `{id}` path segment, as given (the seed's ids were free-form strings; one that is
/// not a UUID names nothing here and answers the route's not-found error).
pub struct SeedId(pub String);

impl FromRequestParts<AppState> for SeedId {
    type Rejection = SeedError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, s)
            .await
            .map(|Path(id)| SeedId(id))
            .map_err(|e| {
                SeedError::new(
                    StatusCode::BAD_REQUEST,
                    "MALFORMED_REQUEST",
                    format!("id: {}", e.body_text()),
                )
            })
    }
}

impl SeedId {
    /// The id as a UUID, if it is one.
    pub fn uuid(&self) -> Option<uuid::Uuid> {
        uuid::Uuid::parse_str(&self.0).ok()
    }
}

/// The command context of a request: its correlation id (set by the correlation
/// middleware, so the id echoed in `X-Correlation-Id` is the one stored on the events)
/// and the actor `api-seed`.
pub struct SeedContext(pub CommandContext);

impl FromRequestParts<AppState> for SeedContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        let correlation_id = parts
            .extensions
            .get::<CorrelationId>()
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), |c| c.0.clone());
        Ok(SeedContext(CommandContext {
            correlation_id,
            actor: Some("api-seed".into()),
            ..CommandContext::default()
        }))
    }
}
