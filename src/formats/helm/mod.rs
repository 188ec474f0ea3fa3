//! Helm chart repositories: chart inspection (`Chart.yaml` from the `.tgz`),
//! the classic `index.yaml`, and the same charts as OCI artifacts.

pub mod chart;
pub mod publish;
