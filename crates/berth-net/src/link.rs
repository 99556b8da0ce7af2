//! The kernel side of the pod network behind a small trait: make the bridge, plug a pod in
//! with a veth pair, unplug it. [`Netlink`] does it with rtnetlink; [`Recording`] is the fake
//! the rest of the crate (and berth's node agent) is tested against.
//!
//! Netlink sockets belong to the network namespace of the thread that opens them, so work
//! inside a pod's namespace runs on a short-lived thread that has `setns`-ed into it, with its
//! own socket and a current-thread runtime; the agent's threads never change namespace.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

use futures::TryStreamExt;
use netlink_packet_route::link::LinkMessage;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::NetError;

/// What plugging a pod in needs.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    pub bridge: &'a str,
    /// The host end of the veth pair.
    pub host_interface: &'a str,
    /// The pod's pinned network namespace.
    pub netns: &'a Path,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// The link operations of the pod network. Each is idempotent.
pub trait Links: Send + Sync {
    /// The bridge exists, holds `gateway/prefix` and is up.
    fn ensure_bridge(&self, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), NetError>;
    /// The pod's `eth0` exists in its namespace with the address and default route, its host
    /// end is on the bridge and up, and the pod's loopback is up.
    fn attach(&self, attachment: &Attachment<'_>) -> Result<(), NetError>;
    /// The host interface (and so its pod end) is gone.
    fn remove(&self, host_interface: &str) -> Result<(), NetError>;
}

/// The pod's end is created under this name on the host, then renamed `eth0` inside the pod.
fn peer_name(host_interface: &str) -> String {
    format!("{}p", &host_interface[..host_interface.len().min(14)])
}

/// rtnetlink against the running kernel (needs CAP_NET_ADMIN).
#[derive(Debug, Default)]
pub struct Netlink;

impl Links for Netlink {
    fn ensure_bridge(&self, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        let name = name.to_string();
        in_namespace(None, move |handle| async move {
            let index = match link_index(&handle, &name).await? {
                Some(index) => index,
                None => {
                    handle
                        .link()
                        .add(LinkBridge::new(&name).build())
                        .execute()
                        .await
                        .or_else(exists_is_fine)?;
                    link_index(&handle, &name)
                        .await?
                        .ok_or_else(|| NetError::Netlink(format!("bridge {name} vanished")))?
                }
            };
            add_address(&handle, index, gateway, prefix).await?;
            set_up(&handle, index).await
        })
    }

    fn attach(&self, a: &Attachment<'_>) -> Result<(), NetError> {
        let netns = open_netns(a.netns)?;
        // Already plugged in (an adopted pod): only make sure the pod side is complete.
        let host = a.host_interface.to_string();
        let peer = peer_name(&host);
        let bridge = a.bridge.to_string();
        let netns_fd = netns.as_raw_fd();
        let moved = in_namespace(None, {
            let (host, peer) = (host.clone(), peer.clone());
            move |handle| async move {
                let bridge_index = link_index(&handle, &bridge)
                    .await?
                    .ok_or_else(|| NetError::Netlink(format!("no bridge {bridge}")))?;
                if link_index(&handle, &host).await?.is_none() {
                    handle
                        .link()
                        .add(LinkVeth::new(&host, &peer).build())
                        .execute()
                        .await
                        .or_else(exists_is_fine)?;
                }
                let host_index = link_index(&handle, &host)
                    .await?
                    .ok_or_else(|| NetError::Netlink(format!("veth {host} vanished")))?;
                handle
                    .link()
                    .set(
                        LinkUnspec::new_with_index(host_index)
                            .controller(bridge_index)
                            .up()
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(netlink)?;
                // The pod end is still on the host the first time: move it into the pod.
                if let Some(peer_index) = link_index(&handle, &peer).await? {
                    handle
                        .link()
                        .set(
                            LinkUnspec::new_with_index(peer_index)
                                .setns_by_fd(netns_fd)
                                .build(),
                        )
                        .execute()
                        .await
                        .map_err(netlink)?;
                }
                Ok(())
            }
        });
        moved?;
        let (address, prefix, gateway) = (a.address, a.prefix, a.gateway);
        in_namespace(Some(netns.as_fd()), move |handle| async move {
            if let Some(lo) = link_index(&handle, "lo").await? {
                set_up(&handle, lo).await?;
            }
            let eth0 = match link_index(&handle, "eth0").await? {
                Some(index) => index,
                None => {
                    let index = link_index(&handle, &peer)
                        .await?
                        .ok_or_else(|| NetError::Netlink(format!("{peer} is not in the pod")))?;
                    handle
                        .link()
                        .set(LinkUnspec::new_with_index(index).name("eth0").build())
                        .execute()
                        .await
                        .map_err(netlink)?;
                    index
                }
            };
            add_address(&handle, eth0, address, prefix).await?;
            set_up(&handle, eth0).await?;
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .output_interface(eth0)
                .build();
            handle
                .route()
                .add(route)
                .execute()
                .await
                .or_else(exists_is_fine)
        })
    }

    fn remove(&self, host_interface: &str) -> Result<(), NetError> {
        let name = host_interface.to_string();
        in_namespace(None, move |handle| async move {
            let Some(index) = link_index(&handle, &name).await? else {
                return Ok(());
            };
            match handle.link().del(index).execute().await {
                Ok(()) => Ok(()),
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => Ok(()),
                Err(e) => Err(netlink(e)),
            }
        })
    }
}

fn libc_enodev() -> i32 {
    rustix::io::Errno::NODEV.raw_os_error()
}

pub(crate) fn netlink(e: rtnetlink::Error) -> NetError {
    NetError::Netlink(e.to_string())
}

/// EEXIST from an add means someone (an earlier attempt) already did it.
pub(crate) fn exists_is_fine(e: rtnetlink::Error) -> Result<(), NetError> {
    match &e {
        rtnetlink::Error::NetlinkError(m)
            if m.raw_code() == -rustix::io::Errno::EXIST.raw_os_error() =>
        {
            Ok(())
        }
        _ => Err(netlink(e)),
    }
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(LinkMessage { header, .. })) => Ok(Some(header.index)),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => Ok(None),
        Err(e) => Err(netlink(e)),
    }
}

async fn set_up(handle: &Handle, index: u32) -> Result<(), NetError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink)
}

async fn add_address(
    handle: &Handle,
    index: u32,
    address: Ipv4Addr,
    prefix: u8,
) -> Result<(), NetError> {
    handle
        .address()
        .add(index, address.into(), prefix)
        .execute()
        .await
        .or_else(exists_is_fine)
}

fn open_netns(path: &Path) -> Result<OwnedFd, NetError> {
    rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| NetError::Io(format!("opening {}", path.display()), e.into()))
}

/// Runs `work` with a netlink handle of `netns` (the host's when `None`) on a thread of its
/// own, which enters the namespace first, and waits for it.
pub(crate) fn in_namespace<F, Fut>(
    netns: Option<std::os::fd::BorrowedFd<'_>>,
    work: F,
) -> Result<(), NetError>
where
    F: FnOnce(Handle) -> Fut + Send,
    Fut: std::future::Future<Output = Result<(), NetError>>,
{
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            if let Some(fd) = netns {
                rustix::thread::move_into_link_name_space(
                    fd,
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(|e| {
                    NetError::Io("entering the pod's network namespace".into(), e.into())
                })?;
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|e| NetError::Io("starting a netlink runtime".into(), e))?;
            runtime.block_on(async move {
                let (connection, handle, _) = rtnetlink::new_connection()
                    .map_err(|e| NetError::Io("opening a netlink socket".into(), e))?;
                let driver = tokio::spawn(connection);
                let result = work(handle).await;
                driver.abort();
                result
            })
        });
        thread
            .join()
            .unwrap_or_else(|_| Err(NetError::Netlink("the netlink thread panicked".into())))
    })
}

/// Records the calls, in a readable form, and does nothing.
#[derive(Debug, Default)]
pub struct Recording {
    calls: Mutex<Vec<String>>,
}

impl Recording {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, call: String) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }
}

impl Links for Recording {
    fn ensure_bridge(&self, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        self.record(format!("bridge {name} {gateway}/{prefix}"));
        Ok(())
    }

    fn attach(&self, a: &Attachment<'_>) -> Result<(), NetError> {
        self.record(format!(
            "attach {} on {} {} {}/{} via {}",
            a.host_interface,
            a.bridge,
            a.netns.display(),
            a.address,
            a.prefix,
            a.gateway
        ));
        Ok(())
    }

    fn remove(&self, host_interface: &str) -> Result<(), NetError> {
        self.record(format!("remove {host_interface}"));
        Ok(())
    }
}
