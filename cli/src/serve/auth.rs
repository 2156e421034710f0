//! Bearer tokens with scopes, from `--token-file`.
//!
//! The file has one `TOKEN SCOPE[,SCOPE]` per line (scopes: `ingest`, `read`); `#` starts a
//! comment; blank lines are skipped. Clients send `Authorization: Bearer TOKEN`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::routes::error_response;
use super::AppState;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `POST /v1/events`.
    Ingest,
    /// Every `GET` but `/v1/health`.
    Read,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        match s {
            "ingest" => Some(Scope::Ingest),
            "read" => Some(Scope::Read),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
        }
    }
}

/// The tokens of a token file.
#[derive(Debug)]
pub struct Tokens {
    entries: Vec<(Vec<u8>, Vec<Scope>)>,
}

impl Tokens {
    /// Reads and checks a token file.
    ///
    /// # Errors
    /// When the file cannot be read, a line has no scope or an unknown one, or there is no
    /// token at all.
    pub fn load(path: &Path) -> anyhow::Result<Tokens> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("token file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Tokens> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(token), Some(scopes), None) = (parts.next(), parts.next(), parts.next())
            else {
                bail!(
                    "line {}: expected `TOKEN SCOPE[,SCOPE]` (scopes: ingest, read)",
                    i + 1
                );
            };
            let mut list = Vec::new();
            for s in scopes.split(',').filter(|s| !s.is_empty()) {
                match Scope::parse(s) {
                    Some(sc) => list.push(sc),
                    None => bail!("line {}: unknown scope {s:?} (scopes: ingest, read)", i + 1),
                }
            }
            if list.is_empty() {
                bail!("line {}: the token has no scope", i + 1);
            }
            entries.push((token.as_bytes().to_vec(), list));
        }
        if entries.is_empty() {
            bail!("no token in it (one `TOKEN SCOPE[,SCOPE]` per line)");
        }
        Ok(Tokens { entries })
    }

    /// The scopes of `token`; every entry is compared in full, so the time taken does not
    /// depend on where a guess first differs.
    fn scopes_of(&self, token: &[u8]) -> Option<&[Scope]> {
        let mut found = None;
        for (t, scopes) in &self.entries {
            if ct_eq(t, token) {
                found = Some(scopes.as_slice());
            }
        }
        found
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The scope a request needs, `None` for open endpoints.
fn needed(method: &Method, path: &str) -> Option<Scope> {
    if path == "/v1/health" {
        return None;
    }
    if method == Method::POST {
        Some(Scope::Ingest)
    } else {
        Some(Scope::Read)
    }
}

/// Middleware: checks the bearer token before the body is read.
pub async fn require(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(tokens) = &state.tokens else {
        return next.run(req).await;
    };
    let Some(scope) = needed(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (kind, rest) = v.trim().split_once(' ')?;
            kind.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let Some(token) = bearer else {
        return unauthorized("missing `Authorization: Bearer TOKEN`");
    };
    match tokens.scopes_of(token.as_bytes()) {
        None => unauthorized("unknown token"),
        Some(scopes) if !scopes.contains(&scope) => error_response(
            StatusCode::FORBIDDEN,
            format!("this token lacks the `{}` scope", scope.name()),
        ),
        Some(_) => next.run(req).await,
    }
}

fn unauthorized(msg: &str) -> Response {
    let mut r = error_response(StatusCode::UNAUTHORIZED, msg).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"runledger\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_files() {
        let t = Tokens::parse("# tokens\nabc ingest,read\n\nxyz read # reader\n").unwrap();
        assert_eq!(t.scopes_of(b"abc"), Some(&[Scope::Ingest, Scope::Read][..]));
        assert_eq!(t.scopes_of(b"xyz"), Some(&[Scope::Read][..]));
        assert_eq!(t.scopes_of(b"xy"), None);
        assert!(Tokens::parse("abc write").is_err());
        assert!(Tokens::parse("abc").is_err());
        assert!(Tokens::parse("# nothing").is_err());
    }
}
