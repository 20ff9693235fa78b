//! One module per subcommand.

pub mod agent;
pub mod apply;
pub mod bench;
pub mod bench_revoke;
pub mod bench_whatif;
pub mod controller;
pub mod counters;
pub mod datastore_args;
pub mod delete;
pub mod drops;
pub mod explain;
pub mod get;
pub mod lab;
pub mod match_args;
pub mod matrix;
pub mod matrix_html;
pub mod relay;
pub mod render;
pub mod validate;
pub mod whatif;
