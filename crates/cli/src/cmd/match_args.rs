//! The flags that say how a node's pods are found, shared by `agent`, `render` and `lab up`:
//! `--endpoint-match address|interface` and `--iface-name palisade|calico`; and
//! `--established keep|revoke`, shared by `agent` and `lab up`.

use palisade_calc::IfaceNaming;
use palisade_render::config::EndpointMatch;

/// How a packet finds its local pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EndpointMatchArg {
    /// By the pod's addresses (any CNI).
    Address,
    /// By the pod's host-side interface name (Palisade's lab, Calico's CNI).
    Interface,
}

impl From<EndpointMatchArg> for EndpointMatch {
    fn from(a: EndpointMatchArg) -> Self {
        match a {
            EndpointMatchArg::Address => EndpointMatch::Address,
            EndpointMatchArg::Interface => EndpointMatch::Interface,
        }
    }
}

/// How the nftables dataplane lays out the tiers whose rules are all Allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NftLayoutArg {
    /// One lookup per tier (address . protocol . port interval sets): a new connection's
    /// cost does not grow with the policies selecting the pod.
    Flat,
    /// A jump to each selecting policy's chain.
    Chains,
}

impl From<NftLayoutArg> for palisade_render::NftLayout {
    fn from(a: NftLayoutArg) -> Self {
        match a {
            NftLayoutArg::Flat => palisade_render::NftLayout::Flat,
            NftLayoutArg::Chains => palisade_render::NftLayout::Chains,
        }
    }
}

/// How the CNI names a pod's host-side interface (interface matching).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IfaceNameArg {
    /// `<prefix>` + SHA-256 of `namespace/pod` (Palisade's lab).
    Palisade,
    /// `cali` + the first 11 hex digits of SHA-1 of `namespace.pod` (Calico's CNI).
    Calico,
}

impl From<IfaceNameArg> for IfaceNaming {
    fn from(a: IfaceNameArg) -> Self {
        match a {
            IfaceNameArg::Palisade => IfaceNaming::Palisade,
            IfaceNameArg::Calico => IfaceNaming::Calico,
        }
    }
}

/// What happens to established connections that a change of policy denies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EstablishedArg {
    /// They go on until they end (conntrack's default).
    Keep,
    /// Their conntrack entries are deleted after every applied change.
    Revoke,
}

impl From<EstablishedArg> for palisade_agent::revoke::Established {
    fn from(a: EstablishedArg) -> Self {
        match a {
            EstablishedArg::Keep => palisade_agent::revoke::Established::Keep,
            EstablishedArg::Revoke => palisade_agent::revoke::Established::Revoke,
        }
    }
}
