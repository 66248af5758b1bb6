//! The load generator's HTTP client.

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A keep-alive HTTP/1.1 connection: the lightest possible load generator, so the client takes
/// as little CPU from the gateway and PostgreSQL as it can.
pub struct Http {
    stream: BufReader<TcpStream>,
    host: String,
}

pub struct Reply {
    pub status: u16,
    pub statements: u64,
    pub body: Vec<u8>,
}

impl Http {
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Http {
            stream: BufReader::new(s),
            host: addr.to_owned(),
        })
    }

    pub async fn post(&mut self, body: &[u8]) -> anyhow::Result<Reply> {
        let head = format!(
            "POST /graphql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        self.send(head, body).await
    }

    /// A GET of `path_and_query` (already URL-encoded).
    pub async fn get(&mut self, path_and_query: &str) -> anyhow::Result<Reply> {
        let head = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\r\n",
            self.host
        );
        self.send(head, &[]).await
    }

    async fn send(&mut self, head: String, body: &[u8]) -> anyhow::Result<Reply> {
        let w = self.stream.get_mut();
        w.write_all(head.as_bytes()).await?;
        w.write_all(body).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let (mut len, mut statements) = (None, 0);
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().ok(),
                    "x-sql-statements" => statements = v.trim().parse().unwrap_or(0),
                    "transfer-encoding" => bail!("chunked responses are not expected"),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; len.context("no content-length")?];
        self.stream.read_exact(&mut body).await?;
        Ok(Reply {
            status,
            statements,
            body,
        })
    }
}
