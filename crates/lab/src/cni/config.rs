//! The network configurations the lab hands the reference plugins on stdin (CNI spec 1.0):
//! `bridge` (bridge `cni0`, the lab puts the gateways on it) or `ptp`, with `static` IPAM for
//! pods whose manifest gives their addresses and `host-local` IPAM (one subnet per node and
//! family, leases under the lab's state directory) for the others. IP masquerading is off:
//! policy needs the pods' real source addresses.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use serde_json::{json, Value};

use crate::addressing::{cidr, node_gateway, node_subnet, offset, static_gateway, GATEWAY_V6};
use crate::error::{LabError, Result};
use crate::wiring::{Cni, IpFamily};

/// The CNI spec version the lab speaks.
pub const CNI_VERSION: &str = "1.0.0";
/// The bridge of every node under `--cni bridge`.
pub const BRIDGE: &str = "cni0";

/// The main plugin's network configuration, `ipam` included.
pub fn network(cni: Cni, name: &str, ipam: Value) -> Result<Value> {
    let mut conf = json!({
        "cniVersion": CNI_VERSION,
        "name": name,
        "ipMasq": false,
        "ipam": ipam,
    });
    match cni {
        Cni::Bridge => {
            conf["type"] = json!("bridge");
            conf["bridge"] = json!(BRIDGE);
            // The lab (as node setup) owns the bridge's addresses: static pods of several
            // prefixes share one bridge, and the plugin allows one IPv4 gateway per bridge.
            conf["isGateway"] = json!(false);
            conf["hairpinMode"] = json!(false);
        }
        Cni::Ptp => conf["type"] = json!("ptp"),
        Cni::Palisade => {
            return Err(LabError::Plan(
                "--cni palisade wires pods itself: no plugin configuration".into(),
            ))
        }
    }
    Ok(conf)
}

/// The `loopback` plugin's configuration (brings up `lo` in the pod).
pub fn loopback(name: &str) -> Value {
    json!({ "cniVersion": CNI_VERSION, "name": name, "type": "loopback" })
}

/// The host numbers `host-local` hands out in a node's subnet: `.2`-`.254` (IPv4),
/// `::2`-`::ffff` (IPv6).
const HOSTS_V4: (u32, u32) = (2, 254);
const HOSTS_V6: (u32, u32) = (2, 0xffff);

/// `host-local` IPAM: node `index`'s subnet of each family of `family`, the node's gateway,
/// a default route per family; leases in `data_dir`. Addresses in `reserved` (pods' own
/// addresses from their manifests, and their gateways) are left out: the subnet's range set
/// is split around them.
pub fn host_local(
    index: usize,
    family: IpFamily,
    data_dir: &Path,
    reserved: &BTreeSet<IpAddr>,
) -> Value {
    let mut ranges = Vec::new();
    let mut routes = Vec::new();
    for (v6, wanted, default) in [
        (false, family.has_v4(), "0.0.0.0/0"),
        (true, family.has_v6(), "::/0"),
    ] {
        if !wanted {
            continue;
        }
        let (net, len) = node_subnet(index, v6);
        let (first, last) = if v6 { HOSTS_V6 } else { HOSTS_V4 };
        let mut set = Vec::new();
        let mut start = first;
        let mut push = |from: u32, to: u32| {
            if from <= to {
                set.push(json!({
                    "subnet": cidr(net, Some(len)),
                    "rangeStart": offset(net, from).to_string(),
                    "rangeEnd": offset(net, to).to_string(),
                    "gateway": node_gateway(index, v6).to_string(),
                }));
            }
        };
        for host in first..=last {
            if reserved.contains(&offset(net, host)) {
                push(start, host - 1);
                start = host + 1;
            }
        }
        push(start, last);
        ranges.push(Value::Array(set));
        routes.push(json!({ "dst": default }));
    }
    json!({
        "type": "host-local",
        "dataDir": data_dir.display().to_string(),
        "ranges": ranges,
        "routes": routes,
    })
}

/// What `static` IPAM gives a pod with addresses `ips`, and the gateway addresses the node
/// side needs (under `bridge`, the lab puts them on `cni0`; `ptp` puts them on the pod's host
/// veth itself). `taken`: every pod address of the lab (gateways avoid them).
pub struct StaticIpam {
    pub ipam: Value,
    /// `(gateway, prefix length)` per IPv4 address (and per IPv6 address under `ptp`).
    pub gateways: Vec<(IpAddr, u8)>,
}

pub fn static_ipam(cni: Cni, ips: &[IpAddr], taken: &BTreeSet<IpAddr>) -> Result<StaticIpam> {
    let mut addresses = Vec::new();
    let mut routes = Vec::new();
    let mut gateways = Vec::new();
    for &ip in ips {
        if ip.is_ipv6() && cni == Cni::Bridge {
            addresses.push(json!({ "address": cidr(ip, None) }));
            routes.push(json!({ "dst": "::/0", "gw": GATEWAY_V6.to_string() }));
            continue;
        }
        let (len, gw) = static_gateway(ip, taken)
            .ok_or_else(|| LabError::Plan(format!("no free gateway address next to {ip}")))?;
        addresses.push(json!({ "address": cidr(ip, Some(len)), "gateway": gw.to_string() }));
        routes.push(json!({ "dst": if ip.is_ipv6() { "::/0" } else { "0.0.0.0/0" } }));
        gateways.push((gw, len));
    }
    Ok(StaticIpam {
        ipam: json!({ "type": "static", "addresses": addresses, "routes": routes }),
        gateways,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bridge_config_without_masquerading_or_plugin_gateway() {
        let conf = network(Cni::Bridge, "pal", json!({"type": "static"})).unwrap();
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["type"], "bridge");
        assert_eq!(conf["bridge"], "cni0");
        assert_eq!(conf["ipMasq"], false);
        assert_eq!(conf["isGateway"], false);
        assert_eq!(conf["ipam"]["type"], "static");
        let ptp = network(Cni::Ptp, "pal", json!({})).unwrap();
        assert_eq!(
            (ptp["type"].as_str(), ptp["ipMasq"].as_bool()),
            (Some("ptp"), Some(false))
        );
        assert!(ptp.get("bridge").is_none());
        assert!(network(Cni::Palisade, "pal", json!({})).is_err());
    }

    #[test]
    fn host_local_has_one_range_set_per_family_of_the_node() {
        let ipam = host_local(
            2,
            IpFamily::Dual,
            Path::new("/run/x/ipam"),
            &BTreeSet::new(),
        );
        assert_eq!(
            ipam,
            json!({
                "type": "host-local",
                "dataDir": "/run/x/ipam",
                "ranges": [
                    [{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.2",
                      "rangeEnd": "10.244.1.254", "gateway": "10.244.1.1"}],
                    [{"subnet": "fd00:10:244:1::/64", "rangeStart": "fd00:10:244:1::2",
                      "rangeEnd": "fd00:10:244:1::ffff", "gateway": "fd00:10:244:1::1"}]
                ],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
            })
        );
        let v6 = host_local(1, IpFamily::Ipv6, Path::new("/d"), &BTreeSet::new());
        assert_eq!(v6["ranges"].as_array().unwrap().len(), 1);
        assert_eq!(v6["routes"], json!([{"dst": "::/0"}]));
    }

    #[test]
    fn host_local_leaves_reserved_addresses_out() {
        let reserved: BTreeSet<IpAddr> = [
            ip("10.244.0.2"),
            ip("10.244.0.10"),
            ip("10.244.0.254"),
            ip("10.9.9.9"),
        ]
        .into();
        let ipam = host_local(1, IpFamily::Ipv4, Path::new("/d"), &reserved);
        let set: Vec<(String, String)> = ipam["ranges"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["rangeStart"].as_str().unwrap().to_string(),
                    r["rangeEnd"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            set,
            [
                ("10.244.0.3".to_string(), "10.244.0.9".to_string()),
                ("10.244.0.11".to_string(), "10.244.0.253".to_string())
            ]
        );
    }

    #[test]
    fn static_addresses_keep_the_manifests_address() {
        let taken: BTreeSet<IpAddr> = [ip("10.0.1.1"), ip("10.0.1.254")].into();
        let s = static_ipam(Cni::Bridge, &[ip("10.0.1.1"), ip("fd00::a00:101")], &taken).unwrap();
        assert_eq!(
            s.ipam,
            json!({
                "type": "static",
                "addresses": [
                    {"address": "10.0.1.1/24", "gateway": "10.0.1.253"},
                    {"address": "fd00::a00:101/128"}
                ],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fe80::1"}]
            })
        );
        assert_eq!(s.gateways, vec![(ip("10.0.1.253"), 24)]);
        let p = static_ipam(Cni::Ptp, &[ip("fd00::a00:101")], &BTreeSet::new()).unwrap();
        assert_eq!(
            p.ipam["addresses"],
            json!([{"address": "fd00::a00:101/64", "gateway": "fd00::ffff:ffff:ffff:fffe"}])
        );
        assert_eq!(p.ipam["routes"], json!([{"dst": "::/0"}]));
    }
}
