//! Anti-spoofing: where each local pod address may enter the node, learned from the kernel of
//! the programmed namespace alone (the datastore only knows pod addresses).
//!
//! * **Routed pods** (ptp, Calico's CNI, Palisade's lab: a route per pod over its veth): the
//!   route to the address names the pod's host-side interface. A pod cannot change the node's
//!   routes, so this binding cannot be borrowed.
//! * **Bridged pods** (the `bridge` CNI, flannel): the route names the bridge. The bridge port
//!   is the veth whose peer (in the pod's namespace, found through the veth's
//!   `link_netnsid`/`link_index` and `ip netns list-id`) holds the address. A spoofing pod
//!   *adds* its victim's address to its own `eth0`, so "the peer that holds it" can be
//!   ambiguous. The rule: a port is a candidate for address `a` of endpoint `E` only if its
//!   peer holds `a` and no address of another local endpoint (the spoofer's peer still holds
//!   its own address); a binding made earlier is kept while its port is still a candidate;
//!   otherwise exactly one candidate binds. With none or several, the address is bound
//!   nowhere (`None`): every packet from it is dropped until it is unambiguous again (fail
//!   closed, logged).
//! * An address with no route is left unchecked (not in the map): nothing can be routed back
//!   to it either.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use palisade_dataplane::CommandRunner;
use palisade_model::EndpointId;
use palisade_render::config::SourceBinding;
use serde_json::Value;

/// Addresses → where they may enter; `None`: ambiguous, nowhere.
pub type Bindings = BTreeMap<IpAddr, Option<SourceBinding>>;

/// One interface of the node namespace, as `ip -j -d link show` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    pub name: String,
    pub is_bridge: bool,
    pub master: Option<String>,
    /// The peer's namespace id and interface index (veths).
    pub peer: Option<(i64, i64)>,
}

/// A route of the main table: destination and device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub dev: String,
}

/// What the kernel said, gathered once per learning pass.
#[derive(Debug, Clone, Default)]
pub struct KernelView {
    pub links: Vec<Link>,
    pub routes: Vec<Route>,
    /// Per bridge port name: the addresses its peer interface holds.
    pub peer_addrs: HashMap<String, Vec<IpAddr>>,
}

/// `ip -j -d link show`.
pub fn parse_links(json: &str) -> Vec<Link> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(json) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|l| {
            let name = l.get("ifname")?.as_str()?.to_string();
            let kind = l
                .get("linkinfo")
                .and_then(|i| i.get("info_kind"))
                .and_then(Value::as_str);
            let peer = match (
                l.get("link_netnsid").and_then(Value::as_i64),
                l.get("link_index").and_then(Value::as_i64),
            ) {
                (Some(ns), Some(idx)) => Some((ns, idx)),
                _ => None,
            };
            Some(Link {
                name,
                is_bridge: kind == Some("bridge"),
                master: l.get("master").and_then(Value::as_str).map(str::to_string),
                peer,
            })
        })
        .collect()
}

/// `ip -j route show table main` (either family): unicast routes with a device.
pub fn parse_routes(json: &str, v6: bool) -> Vec<Route> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(json) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|r| {
            if r.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t != "unicast")
            {
                return None;
            }
            let dev = r.get("dev")?.as_str()?.to_string();
            let dst = r.get("dst")?.as_str()?;
            let dst: IpNet = match dst {
                "default" if v6 => "::/0".parse().ok()?,
                "default" => "0.0.0.0/0".parse().ok()?,
                d if d.contains('/') => d.parse().ok()?,
                d => IpNet::from(d.parse::<IpAddr>().ok()?),
            };
            Some(Route { dst, dev })
        })
        .collect()
}

/// `ip -j addr show`: the addresses of the interface with index `ifindex` (all interfaces
/// when `None`), link-local and loopback ones left out.
pub fn parse_addrs(json: &str, ifindex: Option<i64>) -> Vec<IpAddr> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for l in items {
        if ifindex.is_some() && l.get("ifindex").and_then(Value::as_i64) != ifindex {
            continue;
        }
        let Some(Value::Array(addrs)) = l.get("addr_info") else {
            continue;
        };
        for a in addrs {
            let Some(ip) = a
                .get("local")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let link_local = match ip {
                IpAddr::V4(v) => v.is_loopback() || v.is_link_local(),
                IpAddr::V6(v) => v.is_loopback() || (v.segments()[0] & 0xffc0) == 0xfe80,
            };
            if !link_local {
                out.push(ip);
            }
        }
    }
    out
}

/// `ip -j netns list-id`: namespace id → name.
pub fn parse_nsids(json: &str) -> HashMap<i64, String> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(json) else {
        return HashMap::new();
    };
    items
        .iter()
        .filter_map(|n| {
            Some((
                n.get("nsid")?.as_i64()?,
                n.get("name")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The device of the most specific route to `ip`.
fn route_dev<'a>(routes: &'a [Route], ip: &IpAddr) -> Option<&'a str> {
    routes
        .iter()
        .filter(|r| r.dst.contains(ip))
        .max_by_key(|r| r.dst.prefix_len())
        .map(|r| r.dev.as_str())
}

/// The bindings of `endpoints`' addresses in `view` (see the module docs); `previous`: the
/// last pass's, whose bridge ports are kept while still candidates. The second value lists
/// ambiguous addresses, for the log.
pub fn decide(
    view: &KernelView,
    endpoints: &BTreeMap<EndpointId, Vec<IpAddr>>,
    previous: &Bindings,
) -> (Bindings, Vec<IpAddr>) {
    let owner: HashMap<IpAddr, &EndpointId> = endpoints
        .iter()
        .flat_map(|(id, ips)| ips.iter().map(move |ip| (*ip, id)))
        .collect();
    let mut out = Bindings::new();
    let mut ambiguous = Vec::new();
    for (id, ips) in endpoints {
        for ip in ips {
            let Some(dev) = route_dev(&view.routes, ip) else {
                continue;
            };
            let is_bridge = view.links.iter().any(|l| l.name == dev && l.is_bridge);
            if !is_bridge {
                out.insert(
                    *ip,
                    Some(SourceBinding {
                        iface: dev.to_string(),
                        bridge_port: None,
                    }),
                );
                continue;
            }
            let candidates: BTreeSet<&str> = view
                .links
                .iter()
                .filter(|l| l.master.as_deref() == Some(dev))
                .filter(|l| {
                    view.peer_addrs.get(&l.name).is_some_and(|held| {
                        held.contains(ip)
                            && held.iter().all(|h| owner.get(h).is_none_or(|o| *o == id))
                    })
                })
                .map(|l| l.name.as_str())
                .collect();
            let kept = previous
                .get(ip)
                .and_then(Option::as_ref)
                .and_then(|b| b.bridge_port.as_deref())
                .filter(|p| candidates.contains(p));
            let port = match kept {
                Some(p) => Some(p),
                None if candidates.len() == 1 => candidates.first().copied(),
                None => None,
            };
            match port {
                Some(p) => {
                    out.insert(
                        *ip,
                        Some(SourceBinding {
                            iface: dev.to_string(),
                            bridge_port: Some(p.to_string()),
                        }),
                    );
                }
                None => {
                    ambiguous.push(*ip);
                    out.insert(*ip, None);
                }
            }
        }
    }
    (out, ambiguous)
}

/// Asks the kernel through `runner` (which runs in the programmed namespace) for what
/// [`decide`] needs. Errors are the failing command's message.
pub fn read_kernel(runner: &dyn CommandRunner, v4: bool, v6: bool) -> Result<KernelView, String> {
    let run = |args: &[&str]| -> Result<String, String> {
        let out = runner
            .run("ip", args, None)
            .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(format!("ip {}: {}", args.join(" "), out.stderr.trim()))
        }
    };
    let mut view = KernelView {
        links: parse_links(&run(&["-j", "-d", "link", "show"])?),
        ..KernelView::default()
    };
    if v4 {
        view.routes.extend(parse_routes(
            &run(&["-j", "-4", "route", "show", "table", "main"])?,
            false,
        ));
    }
    if v6 {
        view.routes.extend(parse_routes(
            &run(&["-j", "-6", "route", "show", "table", "main"])?,
            true,
        ));
    }
    let ports: Vec<&Link> = view
        .links
        .iter()
        .filter(|l| l.master.is_some() && l.peer.is_some())
        .collect();
    if !ports.is_empty() {
        let nsids = parse_nsids(&run(&["-j", "netns", "list-id"])?);
        let mut by_ns: HashMap<&str, String> = HashMap::new();
        let mut peer_addrs = HashMap::new();
        for l in ports {
            let Some((nsid, idx)) = l.peer else { continue };
            let Some(ns) = nsids.get(&nsid) else { continue };
            if !by_ns.contains_key(ns.as_str()) {
                // A namespace that vanished meanwhile holds nothing.
                let listing = run(&["-n", ns, "-j", "addr", "show"]).unwrap_or_default();
                by_ns.insert(ns.as_str(), listing);
            }
            peer_addrs.insert(l.name.clone(), parse_addrs(&by_ns[ns.as_str()], Some(idx)));
        }
        view.peer_addrs = peer_addrs;
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn bridged_view(peers: &[(&str, &[&str])]) -> KernelView {
        let mut links = vec![Link {
            name: "br0".into(),
            is_bridge: true,
            ..Link::default()
        }];
        let mut peer_addrs = HashMap::new();
        for (i, (port, addrs)) in peers.iter().enumerate() {
            links.push(Link {
                name: port.to_string(),
                is_bridge: false,
                master: Some("br0".into()),
                peer: Some((i as i64, 2)),
            });
            peer_addrs.insert(port.to_string(), addrs.iter().map(|a| ip(a)).collect());
        }
        KernelView {
            links,
            routes: vec![Route {
                dst: "10.1.0.0/24".parse().unwrap(),
                dev: "br0".into(),
            }],
            peer_addrs,
        }
    }

    fn eps() -> BTreeMap<EndpointId, Vec<IpAddr>> {
        BTreeMap::from([
            (EndpointId::new("s", "good"), vec![ip("10.1.0.2")]),
            (EndpointId::new("s", "bad"), vec![ip("10.1.0.3")]),
        ])
    }

    fn port_of(b: &Bindings, a: &str) -> Option<String> {
        b.get(&ip(a)).cloned().flatten().and_then(|b| b.bridge_port)
    }

    #[test]
    fn a_spoofer_holding_its_own_address_too_is_not_a_candidate() {
        let view = bridged_view(&[
            ("vgood", &["10.1.0.2"]),
            ("vbad", &["10.1.0.3", "10.1.0.2"]),
        ]);
        let (b, amb) = decide(&view, &eps(), &Bindings::new());
        assert_eq!(port_of(&b, "10.1.0.2").as_deref(), Some("vgood"));
        // The spoofer's own address is bound nowhere while it holds another's.
        assert_eq!(b.get(&ip("10.1.0.3")), Some(&None));
        assert_eq!(amb, vec![ip("10.1.0.3")]);
    }

    #[test]
    fn an_earlier_binding_is_kept_and_ambiguity_fails_closed() {
        // The spoofer dropped its own address: two clean candidates.
        let view = bridged_view(&[("vgood", &["10.1.0.2"]), ("vbad", &["10.1.0.2"])]);
        let (first, amb) = decide(&view, &eps(), &Bindings::new());
        assert_eq!(first.get(&ip("10.1.0.2")), Some(&None), "bound nowhere");
        assert!(amb.contains(&ip("10.1.0.2")));
        let before = bridged_view(&[("vgood", &["10.1.0.2"]), ("vbad", &["10.1.0.3"])]);
        let (earlier, _) = decide(&before, &eps(), &Bindings::new());
        let (kept, amb) = decide(&view, &eps(), &earlier);
        assert_eq!(port_of(&kept, "10.1.0.2").as_deref(), Some("vgood"));
        assert!(!amb.contains(&ip("10.1.0.2")));
    }

    #[test]
    fn routed_pods_bind_to_the_route_device_and_unrouted_ones_stay_unchecked() {
        let view = KernelView {
            links: vec![],
            routes: parse_routes(
                r#"[{"dst":"default","dev":"eth0"},{"dst":"10.1.0.2","dev":"pal1"},
                    {"dst":"10.1.0.0/16","dev":"eth0"},{"type":"local","dst":"10.1.0.3","dev":"lo"}]"#,
                false,
            ),
            peer_addrs: HashMap::new(),
        };
        let eps = BTreeMap::from([(
            EndpointId::new("s", "a"),
            vec![ip("10.1.0.2"), ip("fd00::2")],
        )]);
        let (b, _) = decide(&view, &eps, &Bindings::new());
        assert_eq!(
            b.get(&ip("10.1.0.2")).cloned().flatten().map(|b| b.iface),
            Some("pal1".to_string())
        );
        assert!(!b.contains_key(&ip("fd00::2")), "no v6 route: unchecked");
    }

    #[test]
    fn parsers_read_iproute2_json() {
        let links = parse_links(
            r#"[{"ifindex":2,"ifname":"br0","linkinfo":{"info_kind":"bridge"}},
                {"ifindex":3,"link_index":2,"ifname":"vA","master":"br0","link_netnsid":0,
                 "linkinfo":{"info_kind":"veth","info_slave_kind":"bridge"}}]"#,
        );
        assert!(links[0].is_bridge);
        assert_eq!(links[1].master.as_deref(), Some("br0"));
        assert_eq!(links[1].peer, Some((0, 2)));
        let addrs = parse_addrs(
            r#"[{"ifindex":1,"addr_info":[{"local":"127.0.0.1"}]},
                {"ifindex":2,"addr_info":[{"local":"10.9.0.2"},{"local":"fe80::1"},{"local":"fd00::2"}]}]"#,
            Some(2),
        );
        assert_eq!(addrs, vec![ip("10.9.0.2"), ip("fd00::2")]);
        assert_eq!(
            parse_nsids(r#"[{"nsid":0,"name":"pod-a"}]"#)
                .get(&0)
                .map(String::as_str),
            Some("pod-a")
        );
    }
}
