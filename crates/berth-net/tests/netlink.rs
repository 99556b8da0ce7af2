//! The pod network against the real kernel (root): two network namespaces the test makes
//! itself are plugged into a bridge of the test's own, get addresses from a test CIDR, and
//! talk to each other and to the host over TCP; detaching leaves no link behind.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use berth_net::link::Netlink;
use berth_net::{Links, NetworkConfig, PodNetwork};

/// A thread living in a network namespace of its own; work is sent to it as closures.
struct Namespace {
    path: PathBuf,
    work: mpsc::Sender<Box<dyn FnOnce() + Send>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Namespace {
    fn new() -> Namespace {
        let (path_tx, path_rx) = mpsc::channel();
        let (work, jobs) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let thread = std::thread::spawn(move || {
            // SAFETY: only the network namespace of this thread changes; no file descriptor
            // table or memory is unshared, which is what the unsafety is about.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
                .expect("unshare a network namespace (root needed)");
            let tid = rustix::thread::gettid().as_raw_nonzero();
            path_tx
                .send(PathBuf::from(format!("/proc/self/task/{tid}/ns/net")))
                .expect("send path");
            for job in jobs {
                job();
            }
        });
        let path = path_rx.recv().expect("namespace path");
        // The path names the thread's namespace from this process's view.
        Namespace {
            path,
            work,
            thread: Some(thread),
        }
    }

    /// Runs `f` inside the namespace and returns its result.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        self.work
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .expect("namespace thread alive");
        rx.recv().expect("namespace thread answered")
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let (dead, _) = mpsc::channel();
        self.work = dead;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn two_pods_on_one_bridge_talk_to_each_other_and_to_the_host() {
    let unique = std::process::id() % 200 + 20;
    let bridge = format!("btest{unique}");
    let cidr = format!("10.251.{unique}.0/24");
    let state = tempfile::tempdir().expect("temp dir");
    let links: Arc<dyn Links> = Arc::new(Netlink);
    let network = PodNetwork::open(
        NetworkConfig {
            bridge: bridge.clone(),
            cidr: cidr.parse().expect("valid CIDR"),
        },
        state.path(),
        links.clone(),
    )
    .expect("open the pod network");
    let (a, b) = (Namespace::new(), Namespace::new());
    let uid_a = format!("aaaaaaaa-{unique:04}");
    let uid_b = format!("bbbbbbbb-{unique:04}");
    let ip_a = network.attach(&uid_a, &a.path).expect("attach a");
    let ip_b = network.attach(&uid_b, &b.path).expect("attach b");
    assert_ne!(ip_a, ip_b);
    // Attaching again (an adopted pod) changes nothing.
    assert_eq!(
        network.attach(&uid_a, &a.path).expect("attach a again"),
        ip_a
    );

    // b serves on 8080; a and the host connect to it by address.
    let listener =
        b.run(move || TcpListener::bind(SocketAddrV4::new(ip_b, 8080)).expect("bind in b"));
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut stream, peer) = listener.accept().expect("accept");
            stream
                .write_all(peer.ip().to_string().as_bytes())
                .expect("reply");
        }
    });
    let seen_from_a = a.run(move || exchange(ip_b));
    assert_eq!(seen_from_a, ip_a.to_string(), "b saw a by its own address");
    let seen_from_host = exchange(ip_b);
    let gateway: Ipv4Addr = Ipv4Addr::new(10, 251, unique as u8, 1);
    assert_eq!(
        seen_from_host,
        gateway.to_string(),
        "the host reaches pods via the bridge"
    );
    server.join().expect("server");

    // A second listener on the same port in a: two pods can both listen on 8080.
    a.run(move || TcpListener::bind(SocketAddrV4::new(ip_a, 8080)).map(|_| ()))
        .expect("a binds 8080 too");

    network.detach(&uid_a).expect("detach a");
    network.detach(&uid_b).expect("detach b");
    let names = link_names();
    assert!(
        !names.contains(&berth_net::host_interface(&uid_a)),
        "a's veth is left: {names:?}"
    );
    links.remove(&bridge).expect("remove the test bridge");
    assert!(!link_names().contains(&bridge));
}

fn exchange(to: Ipv4Addr) -> String {
    let mut stream =
        TcpStream::connect_timeout(&SocketAddrV4::new(to, 8080).into(), Duration::from_secs(5))
            .expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut seen = String::new();
    stream.read_to_string(&mut seen).expect("read");
    seen
}

fn link_names() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .expect("/sys/class/net")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}
