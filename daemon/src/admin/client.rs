//! A minimal HTTP/1.1 client for the admin API, used by `tmcd status`,
//! `tmcd syncer ...` and `tmcd policy list`: plain HTTP or HTTPS (trusting a
//! CA file), with the bearer token of `admin.token_file`.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::tls;

/// A response: status code and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// What a command presents to the admin API.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// File holding the bearer token (`--admin-token-file`).
    pub token_file: Option<PathBuf>,
    /// PEM CA certificates that an `https://` admin URL is checked against
    /// (`--admin-ca-file`).
    pub ca_file: Option<PathBuf>,
}

static DEFAULT: OnceLock<Credentials> = OnceLock::new();

/// Sets the credentials [`request`] uses (the `tmcd` command line does,
/// once, from its flags and `--config`); later calls are ignored.
pub fn set_default_credentials(credentials: Credentials) {
    let _ = DEFAULT.set(credentials);
}

/// A parsed admin URL.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    tls: bool,
    authority: String,
    host: String,
}

fn parse_url(admin: &str) -> Result<Url> {
    let (tls, rest) = if let Some(rest) = admin.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = admin.strip_prefix("http://") {
        (false, rest)
    } else {
        bail!(
            "admin URL {admin:?} must start with http:// or https:// (fix: e.g. http://127.0.0.1:9470)"
        );
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        bail!("admin URL {admin:?} must be http(s)://HOST:PORT (fix: e.g. http://127.0.0.1:9470)");
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(Url {
        tls,
        authority: authority.to_string(),
        host,
    })
}

/// `host:port` of an `http(s)://host:port[/]` admin URL.
pub fn authority(admin: &str) -> Result<String> {
    Ok(parse_url(admin)?.authority)
}

/// Sends `method path` to the admin server at `admin` with the credentials
/// set by [`set_default_credentials`] (none if never set).
pub async fn request(admin: &str, method: &str, path: &str) -> Result<Reply> {
    let credentials = DEFAULT.get().cloned().unwrap_or_default();
    request_with(admin, &credentials, method, path).await
}

/// Sends `method path` to the admin server at `admin` with `credentials`
/// and reads the reply.
pub async fn request_with(
    admin: &str,
    credentials: &Credentials,
    method: &str,
    path: &str,
) -> Result<Reply> {
    let url = parse_url(admin)?;
    let token = match &credentials.token_file {
        Some(file) => Some(super::auth::read_token(file)?),
        None => None,
    };
    let tls_config = match (url.tls, &credentials.ca_file) {
        (true, Some(ca)) => Some(tls::client_config(ca)?),
        (true, None) => bail!(
            "admin URL {admin} is HTTPS, and no CA is given to check its certificate (fix: pass --admin-ca-file with the PEM CA that signed admin.tls_cert_file)"
        ),
        (false, _) => None,
    };
    let stream = tokio::net::TcpStream::connect(&url.authority)
        .await
        .with_context(|| {
            format!(
                "connecting to tmcd at {admin} (is tmcd running? check admin.address in tmc.toml)"
            )
        })?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\nContent-Length: 0\r\n\r\n",
        url.authority
    );
    match tls_config {
        Some(config) => exchange(tls::connect(config, &url.host, stream).await?, &req).await,
        None => exchange(stream, &req).await,
    }
}

async fn exchange(mut stream: impl AsyncRead + AsyncWrite + Unpin, req: &str) -> Result<Reply> {
    stream
        .write_all(req.as_bytes())
        .await
        .context("sending the request")?;
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw).await;
    // A TLS peer that closes without close_notify after a whole reply is
    // not an error worth failing the command for.
    if let Err(err) = read
        && raw.is_empty()
    {
        return Err(err).context("reading the reply");
    }
    parse(&raw)
}

/// Parses a whole HTTP/1.1 response (identity or chunked body).
fn parse(raw: &[u8]) -> Result<Reply> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP reply from tmcd")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line from tmcd")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok(Reply { status, body })
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("malformed chunk")?;
        let size = usize::from_str_radix(size.trim(), 16).context("malformed chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("truncated chunk")?);
        body = rest.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").expect("parse");
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let r = parse(b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").expect("parse");
        assert_eq!((r.status, r.body.as_str()), (503, "abcde"));
    }

    #[test]
    fn admin_urls() {
        assert_eq!(
            authority("http://127.0.0.1:9470/").expect("ok"),
            "127.0.0.1:9470"
        );
        assert!(authority("ftp://x").is_err());
        let url = parse_url("https://[::1]:9470").expect("ok");
        assert!(url.tls);
        assert_eq!(
            (url.authority.as_str(), url.host.as_str()),
            ("[::1]:9470", "::1")
        );
        let url = parse_url("http://tmcd.example:9470/").expect("ok");
        assert!(!url.tls);
        assert_eq!(url.host, "tmcd.example");
    }
}
