//! The smallest HTTP/1.1 client that talks to Janus's HTTP transport: one request per
//! connection (`Connection: close`), JSON in and out, `Content-Length` or chunked bodies.
//! A benchmark that opens a few thousand short connections to one local server needs nothing
//! more, and the load generator stays free of a client stack's dependencies.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What can go wrong with one request.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting, writing or reading failed.
    #[error("HTTP to {addr}: {source}")]
    Io {
        /// The server.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No complete answer in time.
    #[error("HTTP to {0}: no answer in time")]
    Timeout(SocketAddr),
    /// The answer is not HTTP.
    #[error("HTTP: malformed response: {0}")]
    Malformed(String),
    /// Not a 2xx status.
    #[error("HTTP status {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The body, as text.
        body: String,
    },
    /// The body is not JSON.
    #[error("HTTP: body is not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// `POST path` with a JSON body (or `GET path` without one); the JSON answer.
pub async fn json(
    addr: SocketAddr,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<serde_json::Value, HttpError> {
    let body = body.map(serde_json::to_vec).transpose()?;
    let raw = tokio::time::timeout(timeout, exchange(addr, path, body.as_deref()))
        .await
        .map_err(|_| HttpError::Timeout(addr))?
        .map_err(|source| HttpError::Io { addr, source })?;
    let (status, body) = parse_response(&raw)?;
    if !(200..300).contains(&status) {
        return Err(HttpError::Status {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(serde_json::from_slice(&body)?)
}

async fn exchange(addr: SocketAddr, path: &str, body: Option<&[u8]>) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut request = match body {
        Some(b) => format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            b.len()
        ),
        None => format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    }
    .into_bytes();
    request.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&request).await?;
    let mut response = Vec::with_capacity(4096);
    stream.read_to_end(&mut response).await?;
    Ok(response)
}

/// Status and body of a complete response.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(HttpError::Malformed("truncated head".into())),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &raw[head_len..];
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        rest.get(..len)
            .ok_or_else(|| HttpError::Malformed("body shorter than Content-Length".into()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, HttpError> {
    let malformed = || HttpError::Malformed("bad chunk".into());
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(malformed)?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| malformed())?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| malformed())?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(..size).ok_or_else(malformed)?);
        rest = rest.get(size + 2..).ok_or_else(malformed)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_and_chunked_bodies() {
        let (s, b) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"{}"[..]));
        let (s, b) = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"{\"a\":1}"[..]));
        let (s, _) = parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap();
        assert_eq!(s, 404);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_response(b"hello").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }
}
