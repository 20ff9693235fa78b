//! The nftables backend (`table inet palisade`).

pub mod backend;
pub mod json;
pub mod libnft;
pub mod netlink;
pub mod phased;
pub mod program;

pub use backend::NftBackend;
pub use program::{BaseChain, NftChain, NftProgram, NftRule, NftSet};
