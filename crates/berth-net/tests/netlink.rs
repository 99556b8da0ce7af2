//! The pod network against the real kernel (root): two network namespaces the test makes
//! itself are plugged into a bridge of the test's own, get addresses from a test CIDR, and
//! talk to each other and to the host over TCP; detaching leaves no link behind.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

mod common;

use berth_net::link::Netlink;
use berth_net::{Links, NetworkConfig, PodNetwork};
use common::Namespace;

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
