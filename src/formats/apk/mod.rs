//! APK repositories (Alpine, Wolfi): package inspection, APKINDEX generation, signing.

pub mod index;
pub mod package;
pub mod publish;
pub mod repo;
