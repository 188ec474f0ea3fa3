//! Declarative mirroring: images and charts a site declares (`images.yaml`,
//! `charts.yaml`) kept copied from their upstreams. Pure: what the files say
//! ([`config`]) and what a run does with the upstreams' answers ([`plan`]);
//! the glue stores the files and carries out runs.

pub mod charts;
pub mod config;
pub mod plan;
pub mod run;
pub mod scan;
pub mod schedule;
