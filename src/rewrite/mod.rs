pub mod body;
pub mod headers;
