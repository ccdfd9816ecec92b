//! Where HLS output goes. [`local`]: the data directory Kawa serves from.

pub mod fencing;
pub mod local;
pub mod memory;
pub mod objects;
pub mod s3;
pub mod spool;
pub mod thumbnail;
