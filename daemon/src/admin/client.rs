//! A minimal HTTP/1.1 client for the admin API (plain HTTP on a trusted
//! address), used by `tmcd status` and `tmcd syncer ...`.

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A response: status code and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// `host:port` of an `http://host:port[/]` admin URL.
pub fn authority(admin: &str) -> Result<String> {
    let rest = admin.strip_prefix("http://").with_context(|| {
        format!("admin URL {admin:?} must start with http:// (fix: e.g. http://127.0.0.1:9470)")
    })?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        bail!("admin URL {admin:?} must be http://HOST:PORT (fix: e.g. http://127.0.0.1:9470)");
    }
    Ok(authority.to_string())
}

/// Sends `method path` to the admin server at `admin` and reads the reply.
pub async fn request(admin: &str, method: &str, path: &str) -> Result<Reply> {
    let authority = authority(admin)?;
    let mut stream = tokio::net::TcpStream::connect(&authority)
        .await
        .with_context(|| {
            format!(
                "connecting to tmcd at {admin} (is tmcd running? check admin.address in tmc.toml)"
            )
        })?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .context("sending the request")?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .context("reading the reply")?;
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
        assert!(authority("https://x").is_err());
    }
}
