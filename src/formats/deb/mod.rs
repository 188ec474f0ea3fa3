//! Debian repositories: package inspection, index generation, signing.

pub mod control;
pub mod index;
pub mod package;
pub mod publish;
pub mod repo;
pub mod sign;
