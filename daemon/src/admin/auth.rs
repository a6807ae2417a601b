//! Who may call the admin API: a bearer token (`admin.token_file`) guards
//! `/api/v1` (and `/metrics` with `admin.metrics_need_token`); POST endpoints
//! always need it. `/healthz` and `/readyz` stay open for probes (they are
//! not behind this layer).

use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use crate::config::Config;

/// The token the admin API requires, and where.
#[derive(Clone, Default)]
pub struct Access {
    token: Option<Arc<str>>,
    metrics_need_token: bool,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("metrics_need_token", &self.metrics_need_token)
            .finish()
    }
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No or a wrong bearer token (401).
    Unauthenticated(&'static str),
    /// A POST while no token is configured: nobody may (403).
    NoTokenConfigured,
}

impl Access {
    /// The access rules of `config` (reads `admin.token_file`).
    pub fn from_config(config: &Config) -> Result<Self> {
        let token = match &config.admin.token_file {
            Some(file) => Some(read_token(&config.resolve(file.get_ref()))?),
            None => None,
        };
        Ok(Self {
            token: token.map(Arc::from),
            metrics_need_token: config.admin.metrics_need_token,
        })
    }

    /// Rules with `token` (None: no token configured).
    pub fn new(token: Option<&str>, metrics_need_token: bool) -> Self {
        Self {
            token: token.map(Arc::from),
            metrics_need_token,
        }
    }

    /// Whether a request may proceed, given its `Authorization` header.
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&[u8]>,
    ) -> Result<(), Refusal> {
        let Some(token) = &self.token else {
            // Without a token the server is on loopback (the config refuses
            // anything else): reads are open, writes are refused.
            return if method == Method::GET || method == Method::HEAD {
                Ok(())
            } else {
                Err(Refusal::NoTokenConfigured)
            };
        };
        if path == "/metrics" && !self.metrics_need_token && method == Method::GET {
            return Ok(());
        }
        let Some(value) = authorization else {
            return Err(Refusal::Unauthenticated("no bearer token"));
        };
        let presented = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "));
        match presented {
            Some(presented) if constant_time_eq(presented, token.as_bytes()) => Ok(()),
            Some(_) => Err(Refusal::Unauthenticated("a wrong bearer token")),
            None => Err(Refusal::Unauthenticated(
                "an Authorization header that is not `Bearer <token>`",
            )),
        }
    }
}

/// The middleware: refuses what [`Access::check`] refuses, with a JSON
/// `{"error": ...}` naming the fix.
pub async fn require(State(access): State<Access>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match access.check(request.method(), request.uri().path(), authorization) {
        Ok(()) => next.run(request).await,
        Err(Refusal::Unauthenticated(what)) => {
            tracing::debug!(path = %request.uri().path(), reason = what, "admin request refused");
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({"error": format!(
                    "the admin API needs the bearer token of admin.token_file; this request has {what} (fix: pass --admin-token-file FILE to tmcd's commands, or send `Authorization: Bearer <token>`)"
                )})),
            )
                .into_response()
        }
        Err(Refusal::NoTokenConfigured) => (
            StatusCode::FORBIDDEN,
            Json(json!({"error":
                "POST endpoints of the admin API need a bearer token, and this tmcd has none (fix: set admin.token_file in tmc.toml, restart tmcd, and pass --admin-token-file to the command)"
            })),
        )
            .into_response(),
    }
}

/// The token in `path`: its content without surrounding whitespace.
pub fn read_token(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the admin token file {} (fix: point admin.token_file or --admin-token-file at a readable file)",
            path.display()
        )
    })?;
    let token = text.trim();
    if token.is_empty() {
        bail!(
            "the admin token file {} is empty (fix: write a random token into it, e.g. `head -c 32 /dev/urandom | base64 > {}`)",
            path.display(),
            path.display()
        );
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "the admin token file {} holds whitespace or control characters inside the token (fix: one line, e.g. base64)",
            path.display()
        );
    }
    Ok(token.to_string())
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_reads_pass_and_writes_are_refused() {
        let open = Access::new(None, false);
        assert_eq!(open.check(&Method::GET, "/api/v1/status", None), Ok(()));
        assert_eq!(
            open.check(&Method::POST, "/api/v1/syncers/west/resync", None),
            Err(Refusal::NoTokenConfigured)
        );
        assert_eq!(
            open.check(
                &Method::POST,
                "/api/v1/syncers/west/resync",
                Some(b"Bearer x")
            ),
            Err(Refusal::NoTokenConfigured)
        );
    }

    #[test]
    fn with_a_token_every_call_needs_it() {
        let guarded = Access::new(Some("s3cret"), false);
        for method in [Method::GET, Method::POST] {
            assert!(matches!(
                guarded.check(&method, "/api/v1/status", None),
                Err(Refusal::Unauthenticated(_))
            ));
            assert!(matches!(
                guarded.check(&method, "/api/v1/status", Some(b"Bearer s3cre")),
                Err(Refusal::Unauthenticated("a wrong bearer token"))
            ));
            assert!(matches!(
                guarded.check(&method, "/api/v1/status", Some(b"Basic s3cret")),
                Err(Refusal::Unauthenticated(_))
            ));
            assert_eq!(
                guarded.check(&method, "/api/v1/status", Some(b"Bearer s3cret")),
                Ok(())
            );
        }
    }

    #[test]
    fn metrics_need_the_token_only_when_configured() {
        let open_metrics = Access::new(Some("t"), false);
        assert_eq!(open_metrics.check(&Method::GET, "/metrics", None), Ok(()));
        let closed = Access::new(Some("t"), true);
        assert!(closed.check(&Method::GET, "/metrics", None).is_err());
        assert_eq!(
            closed.check(&Method::GET, "/metrics", Some(b"Bearer t")),
            Ok(())
        );
    }

    #[test]
    fn token_files_are_trimmed_and_must_hold_one_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "abc\n").expect("write");
        assert_eq!(read_token(&file).expect("token"), "abc");
        std::fs::write(&file, "\n").expect("write");
        let err = read_token(&file).expect_err("empty").to_string();
        assert!(err.contains("is empty"), "{err}");
        std::fs::write(&file, "a b").expect("write");
        assert!(read_token(&file).is_err());
    }
}
