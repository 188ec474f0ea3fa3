//! The package formats the release lifecycle knows, in one list: activation
//! prepares each one's draft, rollback asks each what re-activating a release
//! needs. The core names no format; a new format is one entry here.

use crate::formats::{self, Rollback};
use super::service::{ApiResultOf, Ctx, ReleaseRow, SiteRow};

#[derive(Clone, Copy, Debug)]
pub(super) enum Format {
    Deb,
    Apk,
    Helm,
}

/// Every registered format.
pub(super) const ALL: [Format; 3] = [Format::Deb, Format::Apk, Format::Helm];

impl Format {
    /// Brings a draft's indexes up to date (publishing what changed), or
    /// refuses while it waits for the user's signatures.
    pub(super) async fn prepare_activation(self, ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow) -> ApiResultOf<()> {
        match self {
            Format::Deb => super::deb::prepare_activation(ctx, site, rel).await,
            Format::Apk => super::apk::prepare_activation(ctx, site, rel).await,
            Format::Helm => super::helm::prepare_activation(ctx, site, rel).await,
        }
    }

    /// What re-activating a release needs from this format.
    pub(super) fn rollback(self) -> Rollback {
        match self {
            Format::Deb => <formats::Deb as formats::Format>::ROLLBACK,
            Format::Apk => <formats::Apk as formats::Format>::ROLLBACK,
            Format::Helm => <formats::Helm as formats::Format>::ROLLBACK,
        }
    }

    /// The scopes of `target` to publish afresh before it is active again
    /// (none when a pointer switch is right for this format).
    pub(super) async fn rollback_scopes(self, ctx: &Ctx<'_>, site: &SiteRow, target: &ReleaseRow) -> ApiResultOf<Vec<String>> {
        match (self.rollback(), self) {
            (Rollback::PointerSwitch, _) => Ok(vec![]),
            (Rollback::Republish, Format::Deb) => super::deb::rollback_scopes(ctx, site, target).await,
            (Rollback::Republish, f) => Err(crate::api::ApiError::internal(format!("{f:?} cannot republish for a rollback"))),
        }
    }

    /// Publishes one scope of a draft afresh.
    pub(super) async fn republish(self, ctx: &Ctx<'_>, site: &SiteRow, draft: &ReleaseRow, scope: &str) -> ApiResultOf<()> {
        match self {
            Format::Deb => super::deb::publish_dist(ctx, site, draft, scope, false).await.map(|_| ()),
            Format::Apk => match scope.split_once('/') {
                Some((b, r)) => super::apk::publish_repo(ctx, site, draft, b, r, false).await.map(|_| ()),
                None => Err(crate::api::ApiError::internal(format!("not an APK scope: {scope}"))),
            },
            Format::Helm => super::helm::publish_repo(ctx, site, draft, scope).await.map(|_| ()),
        }
    }
}
