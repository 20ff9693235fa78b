//! The nftables backend (`table inet palisade`).

pub mod backend;
pub mod json;
pub mod netlink;
pub mod program;

pub use backend::NftBackend;
pub use program::{BaseChain, NftChain, NftProgram, NftRule, NftSet};
