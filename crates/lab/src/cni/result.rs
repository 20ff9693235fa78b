//! Reading a plugin's answer (CNI spec 1.0): the result of a successful ADD (the pod's
//! addresses, the host-side interface) and the error object of a failure.

use std::net::IpAddr;

use serde_json::Value;

/// What the lab needs from an ADD result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    /// Every address of the pod, in the result's order.
    pub ips: Vec<IpAddr>,
    /// The pod's interface on the node: the last interface of the result outside the pod
    /// (`bridge` lists the bridge, then the pod's veth; none for `loopback`).
    pub host_interface: Option<String>,
}

/// Parses an ADD result; an error names what is missing or malformed.
pub fn parse_add(result: &Value) -> Result<AddResult, String> {
    let mut ips = Vec::new();
    for entry in result["ips"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let text = entry["address"]
            .as_str()
            .ok_or_else(|| format!("ips entry without an address: {entry}"))?;
        let addr = text.split_once('/').map(|(a, _)| a).unwrap_or(text);
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("ips entry with a bad address {text:?}"))?;
        ips.push(ip);
    }
    let host_interface = result["interfaces"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .rev()
                .find(|i| i.get("sandbox").is_none_or(|s| s.as_str() == Some("")))
        })
        .and_then(|i| i["name"].as_str())
        .map(str::to_string);
    Ok(AddResult {
        ips,
        host_interface,
    })
}

/// The message of a CNI error object (`msg`, then `details` if any); `None` if `output` is
/// not one.
pub fn error_message(output: &str) -> Option<String> {
    let v: Value = serde_json::from_str(output.trim()).ok()?;
    let msg = v["msg"].as_str()?;
    let code = v["code"].as_u64().unwrap_or(0);
    let details = v["details"].as_str().unwrap_or("");
    Some(if details.is_empty() {
        format!("{msg} (CNI error {code})")
    } else {
        format!("{msg}: {details} (CNI error {code})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn add_result_gives_addresses_and_host_interface() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "veth1234abcd", "mac": "bb:bb:bb:bb:bb:bb"},
                {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/p"}
            ],
            "ips": [
                {"interface": 2, "address": "10.244.0.2/24", "gateway": "10.244.0.1"},
                {"interface": 2, "address": "fd00:10:244::2/64"}
            ]
        });
        let a = parse_add(&r).unwrap();
        assert_eq!(
            a.ips,
            vec![
                "10.244.0.2".parse::<IpAddr>().unwrap(),
                "fd00:10:244::2".parse().unwrap()
            ]
        );
        // The last interface outside the pod: the veth, not the bridge.
        assert_eq!(a.host_interface.as_deref(), Some("veth1234abcd"));
        assert!(parse_add(&json!({})).unwrap().ips.is_empty());
        assert!(parse_add(&json!({"ips": [{"address": "nope/24"}]})).is_err());
    }

    #[test]
    fn error_objects_give_msg_and_details() {
        let e =
            r#"{"code": 999, "msg": "failed to add route", "details": "network is unreachable"}"#;
        assert_eq!(
            error_message(e).unwrap(),
            "failed to add route: network is unreachable (CNI error 999)"
        );
        assert_eq!(
            error_message(r#"{"code": 7, "msg": "bad config"}"#).unwrap(),
            "bad config (CNI error 7)"
        );
        assert!(error_message("panic: oops").is_none());
    }
}
