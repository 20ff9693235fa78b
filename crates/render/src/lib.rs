//! # palisade-render
//!
//! DesiredState -> typed rule IR -> iptables-restore + ipset text, or an nftables script (pure).
