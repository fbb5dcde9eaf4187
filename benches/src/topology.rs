//! The network a benchmark runs on: the server in a network namespace of its own, joined to the
//! load generator's (root) namespace by a veth pair with addresses from the benchmarking range
//! 198.18.0.0/15 (RFC 2544). Servers that never offer loopback candidates (Janus's libnice)
//! work there, and every server is measured on the same path.
//!
//! [`Topology`] deletes what it created when dropped, also when a run fails half-way; a
//! leftover from a run that was killed is removed before a new one is built.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

/// What can go wrong while building the network.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// `ip` or `sysctl` could not be started.
    #[error("running `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// What it printed.
        stderr: String,
    },
}

/// A server namespace and the veth pair that reaches it.
#[derive(Debug)]
pub struct Topology {
    /// Namespace name.
    pub namespace: String,
    /// The veth end in the load generator's namespace.
    pub host_veth: String,
    /// The load generator's address.
    pub client_addr: IpAddr,
    /// The server's address.
    pub server_addr: IpAddr,
}

fn run<S: AsRef<str>>(args: &[S]) -> Result<(), TopologyError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let command = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|source| TopologyError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TopologyError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

impl Topology {
    /// The load generator's side: 198.18.0.1.
    pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    /// The server's side: 198.18.0.2.
    pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    /// Build namespace `name` (veth ends `<name>-h` and `<name>-s`, names short enough for
    /// IFNAMSIZ) with the server's address inside and the client's outside.
    pub fn create(name: &str) -> Result<Topology, TopologyError> {
        let topo = Topology {
            namespace: name.to_owned(),
            host_veth: format!("{name}-h"),
            client_addr: IpAddr::V4(Self::CLIENT),
            server_addr: IpAddr::V4(Self::SERVER),
        };
        topo.remove();
        let ns = topo.namespace.as_str();
        let host = topo.host_veth.as_str();
        let inner = format!("{name}-s");
        let client = format!("{}/30", Self::CLIENT);
        let server = format!("{}/30", Self::SERVER);
        let no_ipv6 = format!("net.ipv6.conf.{host}.disable_ipv6=1");
        let steps: [&[&str]; 9] = [
            &["ip", "netns", "add", ns],
            &[
                "ip", "link", "add", host, "type", "veth", "peer", "name", &inner,
            ],
            &["ip", "link", "set", &inner, "netns", ns],
            &["sysctl", "-qw", &no_ipv6],
            &["ip", "addr", "add", &client, "dev", host],
            &["ip", "link", "set", host, "up"],
            &["ip", "-n", ns, "link", "set", "lo", "up"],
            &["ip", "-n", ns, "addr", "add", &server, "dev", &inner],
            &["ip", "-n", ns, "link", "set", &inner, "up"],
        ];
        for step in steps {
            run(step)?;
        }
        // Inside: no IPv6 on the veth (so no link-local candidates), and libnice's replies to
        // checks are not dropped by reverse-path or local-source filtering.
        for setting in [
            format!("net.ipv6.conf.{inner}.disable_ipv6=1"),
            "net.ipv4.conf.all.accept_local=1".to_owned(),
            "net.ipv4.conf.all.rp_filter=0".to_owned(),
            "net.ipv4.conf.default.rp_filter=0".to_owned(),
            format!("net.ipv4.conf.{inner}.rp_filter=0"),
        ] {
            run(&["ip", "netns", "exec", ns, "sysctl", "-qw", &setting])?;
        }
        Ok(topo)
    }

    /// The command prefix that runs a program inside the server namespace.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.namespace.clone(),
        ]
    }

    /// Delete the veth pair and the namespace, ignoring what is already gone.
    fn remove(&self) {
        let _ = run(&["ip", "link", "del", &self.host_veth]);
        let _ = run(&["ip", "netns", "del", &self.namespace]);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.remove();
    }
}
