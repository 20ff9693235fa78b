//! A minimal HTTP/1.0 GET for `palisade counters` and tests (the agent's own endpoints only:
//! plain HTTP on an address taken from the node's status), with a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}{path} did not answer within {timeout:?}")]
    Timeout {
        addr: String,
        path: String,
        timeout: Duration,
    },
    #[error("bad answer from {addr}{path}: {reason}")]
    BadResponse {
        addr: String,
        path: String,
        reason: String,
    },
}

/// Status code and body of `GET path` at `addr`.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), HttpError> {
    let a = addr.to_string();
    let fut = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|source| HttpError::Connect {
                addr: a.clone(),
                source,
            })?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {a}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|source| HttpError::Connect {
                addr: a.clone(),
                source,
            })?;
        let mut buf = Vec::new();
        stream
            .read_to_end(&mut buf)
            .await
            .map_err(|source| HttpError::Connect {
                addr: a.clone(),
                source,
            })?;
        parse(&buf).map_err(|reason| HttpError::BadResponse {
            addr: a.clone(),
            path: path.to_string(),
            reason,
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| HttpError::Timeout {
            addr: a.clone(),
            path: path.to_string(),
            timeout,
        })?
}

/// `GET path` at `addr` for a streamed answer (`/drops?follow`): connects within `timeout`,
/// then hands each line of a 200 answer's body to `on_line` as it arrives, until the server
/// closes the connection or `on_line` returns `false`.
pub async fn get_lines(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    mut on_line: impl FnMut(&str) -> bool,
) -> Result<(), HttpError> {
    use tokio::io::AsyncBufReadExt;
    let a = addr.to_string();
    let io = |source| HttpError::Connect {
        addr: a.clone(),
        source,
    };
    let mut stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| HttpError::Timeout {
            addr: a.clone(),
            path: path.to_string(),
            timeout,
        })?
        .map_err(io)?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {a}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.map_err(io)?;
    let mut lines = tokio::io::BufReader::new(stream).lines();
    let bad = |reason: String| HttpError::BadResponse {
        addr: a.clone(),
        path: path.to_string(),
        reason,
    };
    let status = lines
        .next_line()
        .await
        .map_err(io)?
        .ok_or_else(|| bad("no status line".into()))?;
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(bad(format!("status {status:?}")));
    }
    // Headers end with an empty line.
    while let Some(h) = lines.next_line().await.map_err(io)? {
        if h.is_empty() {
            break;
        }
    }
    while let Some(line) = lines.next_line().await.map_err(io)? {
        if !on_line(&line) {
            break;
        }
    }
    Ok(())
}

fn parse(buf: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "no end of headers".to_string())?;
    let status_line = head.lines().next().unwrap_or_default();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    Ok((code, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let (c, b) =
            parse(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 3\r\n\r\nno\n").unwrap();
        assert_eq!((c, b.as_str()), (503, "no\n"));
        assert!(parse(b"garbage").is_err());
    }
}
