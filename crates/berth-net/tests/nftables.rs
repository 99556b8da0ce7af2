//! The proxy's rules against the real kernel (root), inside a network namespace the test
//! makes itself: a cluster IP and a node port reach their endpoint, an address in the
//! service CIDR that no Service claims is refused at once, a later sync moves traffic to a
//! new endpoint and keeps a pinned client's affinity set, and the table is removed whole.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use berth_net::proxy::model::{Endpoint, Protocol, ServicePort};
use berth_net::proxy::nftables::{Dataplane, Kernel, Ruleset, TableConfig, delete_table};
use common::Namespace;

fn sh(command: &str) {
    let status = std::process::Command::new("sh")
        .args(["-c", command])
        .status()
        .expect("run sh");
    assert!(status.success(), "{command}");
}

fn config() -> TableConfig {
    TableConfig {
        table: "bproxytest".into(),
        bridge: "bproxytest".into(),
        cluster_cidr: "10.42.0.0/24".parse().expect("cidr"),
        service_cidr: "10.43.0.0/24".parse().expect("cidr"),
        masquerade_all: false,
    }
}

fn port(endpoint: Ipv4Addr) -> ServicePort {
    let endpoint = Endpoint {
        ip: endpoint,
        port: 8080,
    };
    ServicePort {
        key: "default/web/tcp/http".into(),
        protocol: Protocol::Tcp,
        port: 80,
        virtual_ips: vec![Ipv4Addr::new(10, 43, 0, 5)],
        node_port: Some(30080),
        load_balancer: false,
        endpoints: vec![endpoint],
        external_endpoints: vec![endpoint],
        affinity_seconds: Some(60),
    }
}

/// Serves one connection on `listener`, answering with `name`.
fn serve_once(listener: &TcpListener, name: &'static str) -> std::thread::JoinHandle<()> {
    let listener = listener.try_clone().expect("clone listener");
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.write_all(name.as_bytes());
        }
    })
}

fn fetch(to: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn rules_steer_connections_and_follow_a_sync() {
    let ns = Namespace::new();
    let result = ns.run(|| {
        sh("ip link set lo up && ip link add d0 type veth peer name d1 && ip link set d0 up && ip link set d1 up \
            && ip addr add 10.42.0.2/24 dev d0 && ip addr add 10.42.0.3/24 dev d0 \
            && ip route add default dev d0");
        let first = TcpListener::bind("10.42.0.2:8080").expect("bind first");
        let second = TcpListener::bind("10.42.0.3:8080").expect("bind second");
        let kernel = Kernel;
        let before = Ruleset::render(&config(), &[port(Ipv4Addr::new(10, 42, 0, 2))]);
        kernel
            .apply(&before.transaction("bproxytest", None))
            .expect("first sync");
        let cluster_ip: SocketAddr = "10.43.0.5:80".parse().expect("addr");
        let node_port: SocketAddr = "127.0.0.1:30080".parse().expect("addr");

        let served = serve_once(&first, "first");
        assert_eq!(fetch(cluster_ip).expect("via the cluster IP"), "first");
        served.join().expect("server");
        let served = serve_once(&first, "first");
        assert_eq!(fetch(node_port).expect("via the node port"), "first");
        served.join().expect("server");

        // Nothing claims 10.43.0.9: refused at once rather than sent out of the host.
        let refused = fetch("10.43.0.9:80".parse().expect("addr"));
        let kind = refused.as_ref().map_err(std::io::Error::kind).err();
        assert_eq!(kind, Some(std::io::ErrorKind::ConnectionRefused), "{refused:?}");

        // The client is pinned to the first endpoint: its address is in that endpoint's set.
        let sets = std::process::Command::new("nft")
            .args(["list", "table", "ip", "bproxytest"])
            .output()
            .expect("nft list");
        let listing = String::from_utf8_lossy(&sets.stdout).to_string();
        assert!(listing.contains("aff-60-default/web/tcp/http/10.42.0.2_8080"), "{listing}");

        // A sync to the second endpoint moves new connections there.
        let after = Ruleset::render(&config(), &[port(Ipv4Addr::new(10, 42, 0, 3))]);
        kernel
            .apply(&after.transaction("bproxytest", Some(&before)))
            .expect("second sync");
        let served = serve_once(&second, "second");
        assert_eq!(fetch(cluster_ip).expect("after the sync"), "second");
        served.join().expect("server");
        let listing = std::process::Command::new("nft")
            .args(["list", "table", "ip", "bproxytest"])
            .output()
            .expect("nft list");
        let listing = String::from_utf8_lossy(&listing.stdout).to_string();
        assert!(!listing.contains("10.42.0.2_8080"), "{listing}");

        // Applying the same state again is a no-op that succeeds.
        kernel
            .apply(&after.transaction("bproxytest", Some(&after)))
            .expect("idempotent sync");
        delete_table(&kernel, "bproxytest").expect("delete");
        delete_table(&kernel, "bproxytest").expect("delete again");
        let gone = std::process::Command::new("nft")
            .args(["list", "table", "ip", "bproxytest"])
            .output()
            .expect("nft list");
        assert!(!gone.status.success());
        "ok"
    });
    assert_eq!(result, "ok");
}
