//! One module per subcommand.

pub mod explain;
pub mod matrix;
pub mod validate;
