//! Declarative mirroring: images and charts a site declares (`images.yaml`,
//! `charts.yaml`) kept copied from their upstreams. Pure: what the files say
//! ([`config`]); the glue stores them and carries out runs.

pub mod config;
