//! The `redis` read model: its writer ([`model`], with the machine hashes of
//! [`machines`]), its background rebuild ([`rebuild`]) and its reader ([`reader`]), which
//! is the only other code that knows the key and field names.

pub mod machines;
pub mod model;
pub mod reader;
pub mod rebuild;
