//! The server: a UDP socket and a TCP listener on one address, the loops that read requests
//! from them and write responses, and the watch that keeps the records current.
//!
//! The loops are this crate's own, over hickory-server's request and response types, rather
//! than `hickory_server::Server`: that server logs two lines at `info` for every request
//! (which berth's default log filter would print, one query at a time) and spawns a task per
//! UDP datagram. Here a few UDP workers (one per core) answer from the index inline and only
//! hand forwards to tasks of their own; a TCP connection is served by one task, one request
//! after another, and closed when idle.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_server::net::xfer::Protocol;
use kube::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::error::Error;
use crate::forward::{self, Forwarder};
use crate::handler::{Handler, Step};
use crate::index::IndexOptions;
use crate::name::Domain;
use crate::{Records, watch};

/// The most TCP connections served at once; more are closed as soon as they are accepted.
const MAX_TCP_CONNECTIONS: usize = 1024;

/// How many times binding to port 0 retries when UDP's free port is taken for TCP.
const BIND_ATTEMPTS: usize = 16;

/// The UDP receive buffer asked for (the kernel caps it at `net.core.rmem_max`): a burst of
/// queries while the workers are off the CPU waits here instead of being dropped. The
/// default (about 200 KiB) holds a few hundred queries, a few milliseconds at full speed.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// The cluster DNS server, bound and ready to [`run`](Server::run).
pub struct Server {
    udp: UdpSocket,
    tcp: TcpListener,
    local_addr: SocketAddr,
    handler: Arc<Handler>,
    client: Option<Client>,
    tcp_idle_timeout: std::time::Duration,
}

impl Server {
    /// Binds UDP and TCP on `addr` (port 0 picks a free port, the same for both) and prepares
    /// to answer from the Services and EndpointSlices the API server behind `client` has.
    /// Nothing is watched or answered until [`run`](Server::run).
    pub async fn bind(addr: SocketAddr, client: Client, config: Config) -> Result<Server, Error> {
        let mut server = Server::bind_without_watch(addr, config).await?;
        server.client = Some(client);
        Ok(server)
    }

    /// Binds like [`bind`](Server::bind), but watches nothing: the records are whatever is
    /// given to [`records`](Server::records)`().replace(..)`, and until then every name in the
    /// cluster domain that is not found is SERVFAIL. For tests and benchmarks.
    pub async fn bind_without_watch(addr: SocketAddr, config: Config) -> Result<Server, Error> {
        let domain = Domain::new(&config.cluster_domain).map_err(|source| Error::Domain {
            domain: config.cluster_domain.clone(),
            source,
        })?;
        let (udp, tcp) = bind_both(addr).await?;
        let local_addr = udp.local_addr().map_err(|source| Error::Bind {
            addr,
            protocol: "udp",
            source,
        })?;

        let nameservers = if config.nameservers.is_empty() && !local_addr.ip().is_unspecified() {
            vec![local_addr.ip()]
        } else {
            config.nameservers.clone()
        };
        let records = Records::new(IndexOptions {
            ttl: config.ttl,
            nameservers,
            ..IndexOptions::new(domain)
        });
        let upstreams = config
            .upstreams
            .clone()
            .unwrap_or_else(|| forward::read_resolv_conf(&config.resolv_conf));
        let forwarder = Forwarder::new(
            upstreams,
            local_addr,
            config.upstream_timeout,
            config.max_forwards_in_flight,
        );
        Ok(Server {
            udp,
            tcp,
            local_addr,
            handler: Arc::new(Handler { records, forwarder }),
            client: None,
            tcp_idle_timeout: config.tcp_idle_timeout,
        })
    }

    /// The address the server answers on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The handle on the server's records.
    pub fn records(&self) -> Records {
        self.handler.records.clone()
    }

    /// Where names outside the cluster domain are forwarded.
    pub fn upstreams(&self) -> &[SocketAddr] {
        self.handler.forwarder.upstreams()
    }

    /// Serves until `stop` completes. Errors on a socket are logged and served through, so
    /// this ends early (with [`Error::Serve`]) only if a serving task panics. Stopping ends
    /// every task of the server, forwards in flight included, and closes its sockets.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), Error> {
        let Server {
            udp,
            tcp,
            local_addr,
            handler,
            client,
            tcp_idle_timeout,
        } = self;
        tracing::info!(
            addr = %local_addr,
            domain = %handler.records.options().domain.name(),
            upstreams = ?handler.forwarder.upstreams(),
            "cluster DNS serving"
        );
        let mut tasks = JoinSet::new();
        if let Some(client) = client {
            let records = handler.records.clone();
            tasks.spawn(async move {
                watch::keep_current(client, records).await;
                // The watch only ends if its caches could never start; keep serving.
                std::future::pending::<io::Result<()>>().await
            });
        }
        let udp = Arc::new(udp);
        let workers = std::thread::available_parallelism().map_or(2, usize::from);
        for _ in 0..workers {
            tasks.spawn(serve_udp(udp.clone(), handler.clone()));
        }
        tasks.spawn(serve_tcp(tcp, handler, tcp_idle_timeout));

        tokio::pin!(stop);
        let result = tokio::select! {
            () = &mut stop => Ok(()),
            Some(ended) = tasks.join_next() => match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Error::Serve(e.to_string())),
                Err(e) => Err(Error::Serve(e.to_string())),
            },
        };
        tasks.shutdown().await;
        result
    }
}

/// UDP and TCP sockets on the same address and port.
async fn bind_both(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), Error> {
    let mut last = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind(addr).await.map_err(|source| Error::Bind {
            addr,
            protocol: "udp",
            source,
        })?;
        let bound = udp.local_addr().map_err(|source| Error::Bind {
            addr,
            protocol: "udp",
            source,
        })?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => {
                if let Err(error) =
                    rustix::net::sockopt::set_socket_recv_buffer_size(&udp, UDP_RECEIVE_BUFFER)
                {
                    tracing::debug!(%error, "cannot enlarge the DNS socket's receive buffer");
                }
                return Ok((udp, tcp));
            }
            // Port 0: UDP's free port may be taken for TCP; try another.
            Err(source) if addr.port() == 0 && source.kind() == io::ErrorKind::AddrInUse => {
                last = Some(source);
            }
            Err(source) => {
                return Err(Error::Bind {
                    addr,
                    protocol: "tcp",
                    source,
                });
            }
        }
    }
    Err(Error::Bind {
        addr,
        protocol: "tcp",
        source: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)),
    })
}

/// One UDP worker: answers what the index can inline, hands forwards to tasks (which end
/// with it).
async fn serve_udp(socket: Arc<UdpSocket>, handler: Arc<Handler>) -> io::Result<()> {
    // A query is small; EDNS or not, nothing a client may send needs more.
    let mut buf = vec![0; 4096];
    let mut forwards = JoinSet::new();
    loop {
        while forwards.try_join_next().is_some() {}
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                // ICMP errors from earlier sends and the like: nothing to do for this socket.
                tracing::debug!(%error, "receiving a DNS datagram failed");
                continue;
            }
        };
        if src.port() == 0 || is_unusable(src.ip()) {
            continue;
        }
        match handler.start(buf[..n].to_vec(), src, Protocol::Udp) {
            None => {}
            Some(Step::Done(response)) => send(&socket, &response, src).await,
            Some(Step::Upstream(pending)) => {
                let socket = socket.clone();
                let handler = handler.clone();
                forwards.spawn(async move {
                    let response = handler.finish(pending).await;
                    send(&socket, &response, src).await;
                });
            }
        }
    }
}

async fn send(socket: &UdpSocket, response: &[u8], to: SocketAddr) {
    if let Err(error) = socket.send_to(response, to).await {
        tracing::debug!(%to, %error, "sending a DNS response failed");
    }
}

/// An address no response can go to.
fn is_unusable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified(),
    }
}

/// Accepts TCP connections, one task each.
async fn serve_tcp(
    listener: TcpListener,
    handler: Arc<Handler>,
    idle: std::time::Duration,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let (stream, src) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off a moment rather than spin.
                tracing::warn!(%error, "accepting a DNS connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%src, "too many DNS connections; closing one");
            continue;
        };
        let handler = handler.clone();
        connections.spawn(async move {
            if let Err(error) = serve_connection(stream, src, &handler, idle).await {
                tracing::debug!(%src, %error, "DNS connection ended");
            }
            drop(slot);
        });
    }
}

/// One TCP connection: length-prefixed requests, answered in order, until the client closes
/// it or leaves it idle for `idle`.
async fn serve_connection(
    mut stream: TcpStream,
    src: SocketAddr,
    handler: &Handler,
    idle: std::time::Duration,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        let len = match tokio::time::timeout(idle, stream.read_u16()).await {
            Ok(Ok(len)) => len,
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let mut request = vec![0; usize::from(len)];
        tokio::time::timeout(idle, stream.read_exact(&mut request))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let response = match handler.start(request, src, Protocol::Tcp) {
            None => continue,
            Some(Step::Done(response)) => response,
            Some(Step::Upstream(pending)) => handler.finish(pending).await,
        };
        let len = u16::try_from(response.len()).map_err(io::Error::other)?;
        let mut framed = Vec::with_capacity(response.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&response);
        stream.write_all(&framed).await?;
    }
}
