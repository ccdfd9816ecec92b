// Kawa patch: upstream's code keeps upstream's lints (newer rustc warns on it).
#![allow(warnings)]
pub mod access;
pub mod connection;
pub mod listener;
pub mod options;
pub mod packet;
pub mod protocol;
pub mod settings;
pub mod statistics;
