//! The adder's users: HTTP/1.1 clients of its load-balanced Service, as the story's
//! measurements need them. The demo's users open a new connection for every add, so the
//! load balancer picks a replica for each one; the bench's users keep their connection, as a
//! load generator does, and count adds per second and latency.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::verdict::Add;

/// The adder's answer: the total and the replica that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub total: i64,
    pub pod: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unexpected answer {0:?}")]
    Answer(String),
}

/// One kept-alive connection to the adder's Service.
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    pub async fn open(address: SocketAddr) -> Result<Self, RequestError> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|source| RequestError::Connect { address, source })?;
        // Adds are tiny; Nagle's delay would dominate their latency.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection { sender, driver })
    }

    /// Sends one request and reads the adder's JSON answer.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "adder")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| RequestError::Answer(e.to_string()))?;
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await?.to_bytes();
            Ok::<_, RequestError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| RequestError::Timeout(timeout))??;
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        if status != 200 {
            return Err(RequestError::Status { status, body: text });
        }
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|_| RequestError::Answer(text.clone()))?;
        match (json["total"].as_i64(), json["pod"].as_str()) {
            (Some(total), Some(pod)) => Ok(Reply {
                total,
                pod: pod.to_string(),
            }),
            _ => Err(RequestError::Answer(text)),
        }
    }
}

/// One request on a connection of its own, so the load balancer chooses a replica for it.
pub async fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<Reply, RequestError> {
    let mut connection = tokio::time::timeout(timeout, Connection::open(address))
        .await
        .map_err(|_| RequestError::Timeout(timeout))??;
    connection.send(method, path, body, timeout).await
}

/// The number user `client` sends with its `n`th add: 1 to 9, varied so that the final total
/// checks every number, not only how many adds there were.
pub fn amount(client: usize, n: usize) -> i64 {
    ((client * 7 + n * 5) % 9 + 1) as i64
}

/// `clients` users adding concurrently, `adds` times each, a new connection per add; each
/// user's adds in the order they were answered. Any failed add fails the run: each is a
/// user who got an error.
pub async fn users(
    address: SocketAddr,
    clients: usize,
    adds: usize,
) -> Result<Vec<Vec<Add>>, RequestError> {
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(adds);
                for n in 0..adds {
                    let number = amount(client, n);
                    let reply = request(
                        address,
                        "POST",
                        "/add",
                        &number.to_string(),
                        Duration::from_secs(30),
                    )
                    .await?;
                    seen.push(Add {
                        amount: number,
                        total: reply.total,
                        pod: reply.pod,
                    });
                }
                Ok::<_, RequestError>(seen)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(clients);
    for task in tasks {
        match task.await {
            Ok(result) => all.push(result?),
            Err(e) => return Err(RequestError::Answer(format!("a user's task failed: {e}"))),
        }
    }
    Ok(all)
}

/// Adds per second and latency, as the bench measured them.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub adds: usize,
    pub errors: usize,
    pub elapsed: Duration,
    /// Every successful add's latency, sorted.
    pub latencies: Vec<Duration>,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.adds as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The `q` quantile (0.5, 0.99) of the latencies; zero when nothing succeeded.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank =
            ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1]
    }
}

/// `clients` users on kept-alive connections adding 1 as fast as they are answered for
/// `duration`. A failed add is counted and its connection reopened.
pub async fn throughput(address: SocketAddr, clients: usize, duration: Duration) -> Throughput {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut connection = None;
                while Instant::now() < deadline {
                    let open = match connection.take() {
                        Some(open) => Ok(open),
                        None => Connection::open(address).await,
                    };
                    let mut open = match open {
                        Ok(open) => open,
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let sent = Instant::now();
                    match open
                        .send("POST", "/add", "1", Duration::from_secs(10))
                        .await
                    {
                        Ok(_) => {
                            latencies.push(sent.elapsed());
                            connection = Some(open);
                        }
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut result = Throughput {
        adds: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for task in tasks {
        if let Ok((latencies, errors)) = task.await {
            result.latencies.extend(latencies);
            result.errors += errors;
        }
    }
    result.elapsed = started.elapsed();
    result.adds = result.latencies.len();
    result.latencies.sort_unstable();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_stay_between_one_and_nine() {
        for client in 0..8 {
            for n in 0..50 {
                assert!((1..=9).contains(&amount(client, n)));
            }
        }
        assert_ne!(amount(0, 0), amount(0, 1));
    }

    #[test]
    fn quantiles_pick_the_rank_that_covers_the_share() {
        let measured = Throughput {
            adds: 100,
            errors: 0,
            elapsed: Duration::from_secs(2),
            latencies: (1..=100).map(Duration::from_millis).collect(),
        };
        assert_eq!(measured.quantile(0.5), Duration::from_millis(50));
        assert_eq!(measured.quantile(0.99), Duration::from_millis(99));
        assert_eq!(measured.per_second(), 50.0);
    }
}
