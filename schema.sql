-- Wharf D1 schema. Apply with: wrangler d1 execute <db> --file schema.sql
-- Every statement is idempotent, so applying it again is safe.
-- wharf-schema-version: 11
-- Bump the version above whenever a table, column or index changes; the worker
-- refuses to serve (503 schema_outdated) from a database whose recorded version is older.

CREATE TABLE IF NOT EXISTS schema_meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

-- A tenant. Its content is whatever its active release maps.
-- head_seq is the newest snapshot number materialised in path_versions (0 = nothing yet).
-- Ids are never reused: a new site takes one above every id ever given
-- (AUTOINCREMENT here; databases made before it keep the high-water mark in
-- schema_meta 'site_id_high', which create_site also honours).
-- Every table with a site_id or release_id column holds what a site owns:
-- deleting the site deletes its rows there (the list is read from this file
-- when the worker is built, so a new table cannot be forgotten).
CREATE TABLE IF NOT EXISTS sites (
  id                INTEGER PRIMARY KEY AUTOINCREMENT,
  name              TEXT NOT NULL UNIQUE,
  active_release_id INTEGER,
  head_seq          INTEGER NOT NULL DEFAULT 0,
  created_at        INTEGER NOT NULL
);

-- A hostname belongs to at most one site (the primary key enforces it).
CREATE TABLE IF NOT EXISTS hostnames (
  hostname   TEXT PRIMARY KEY,
  site_id    INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS hostnames_by_site ON hostnames(site_id);

-- Content-addressed store: the bytes live in R2 under blobs/sha256/<sha256>.
CREATE TABLE IF NOT EXISTS blobs (
  sha256     TEXT PRIMARY KEY,
  size       INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);

-- Where a blob's bytes lie in R2 when not under `blobs/sha256/<hex>`: a
-- registry upload sent in one chunk is kept where it was written (its digest
-- computed as it arrived), so the closing PUT copies nothing (R2 has no
-- rename); the small files of a batch are stored together in one object (a
-- pack, `packs/sha256/<hex of the pack>`), each at its offset. Readers follow
-- this row; without one, the bytes are at the default key.
CREATE TABLE IF NOT EXISTS blob_places (
  sha256    TEXT PRIMARY KEY,
  r2_key    TEXT NOT NULL,
  -- NULL: the object is the blob; else the blob is its `size` bytes from here.
  r2_offset INTEGER
);
-- Schema 11 replaced blob_locations (no offset) with blob_places: created
-- (empty on a new database), copied and dropped, so applying this file again is safe.
CREATE TABLE IF NOT EXISTS blob_locations (sha256 TEXT PRIMARY KEY, r2_key TEXT NOT NULL);
INSERT OR IGNORE INTO blob_places(sha256, r2_key, r2_offset) SELECT sha256, r2_key, NULL FROM blob_locations;
DROP TABLE IF EXISTS blob_locations;

-- What a site has proved it holds: it uploaded the bytes (checked against the
-- digest), the worker made them for it, its registry push or mirror stored
-- them. A digest is not a capability: a site may reference a stored blob by
-- digest only if it is listed here for that site.
CREATE TABLE IF NOT EXISTS site_blobs (
  site_id    INTEGER NOT NULL,
  sha256     TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (site_id, sha256)
) WITHOUT ROWID;

-- Releases: draft -> active -> retired (and retired -> active again on rollback).
-- parent_seq is the snapshot a draft was based on (0 = empty); seq is the
-- snapshot it became when it was first activated (NULL while a draft).
CREATE TABLE IF NOT EXISTS releases (
  id           INTEGER PRIMARY KEY,
  site_id      INTEGER NOT NULL,
  parent_id    INTEGER,
  parent_seq   INTEGER NOT NULL DEFAULT 0,
  seq          INTEGER,
  state        TEXT NOT NULL CHECK (state IN ('draft', 'active', 'retired')),
  note         TEXT,
  created_at   INTEGER NOT NULL,
  activated_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS releases_by_site_seq ON releases(site_id, seq);
CREATE INDEX IF NOT EXISTS releases_by_site ON releases(site_id, id);

-- What a draft changes relative to its parent snapshot: sha256 NULL deletes the path.
CREATE TABLE IF NOT EXISTS release_changes (
  release_id   INTEGER NOT NULL,
  path         TEXT NOT NULL,
  sha256       TEXT,
  size         INTEGER,
  content_type TEXT,
  PRIMARY KEY (release_id, path)
) WITHOUT ROWID;

-- (9007199254740991 = 2^53-1 marks a row still open; it survives the trip through JavaScript numbers.)
-- Release contents, MVCC style: a row maps a path to a blob for the snapshots
-- from_seq <= s < to_seq of its site. A new release writes rows only for the
-- paths it changes; serving snapshot s is one lookup on the primary key.
CREATE TABLE IF NOT EXISTS path_versions (
  site_id      INTEGER NOT NULL,
  path         TEXT NOT NULL,
  from_seq     INTEGER NOT NULL,
  to_seq       INTEGER NOT NULL DEFAULT 9007199254740991,
  sha256       TEXT NOT NULL,
  size         INTEGER NOT NULL,
  content_type TEXT NOT NULL,
  PRIMARY KEY (site_id, path, from_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS path_versions_by_end ON path_versions(site_id, to_seq);
CREATE INDEX IF NOT EXISTS path_versions_by_start ON path_versions(site_id, from_seq);

-- Scratch space for one activation batch; always empty outside a batch.
CREATE TABLE IF NOT EXISTS activation_plan (
  release_id   INTEGER NOT NULL,
  path         TEXT NOT NULL,
  sha256       TEXT,
  size         INTEGER,
  content_type TEXT,
  PRIMARY KEY (release_id, path)
) WITHOUT ROWID;

-- A batch starts with an INSERT here of its precondition (1 or 0); a 0 fails
-- the CHECK and D1 rolls the whole batch back. Always empty outside a batch.
CREATE TABLE IF NOT EXISTS batch_guard (
  ok INTEGER NOT NULL CONSTRAINT wharf_guard_failed CHECK (ok = 1)
);

-- API tokens: only the sha256 of the whole token string is kept.
-- site_id NULL = global. scope: read < publish < admin.
CREATE TABLE IF NOT EXISTS tokens (
  id            TEXT PRIMARY KEY,
  secret_sha256 TEXT NOT NULL,
  name          TEXT NOT NULL,
  site_id       INTEGER,
  scope         TEXT NOT NULL CHECK (scope IN ('read', 'publish', 'admin')),
  created_at    INTEGER NOT NULL,
  expires_at    INTEGER,
  revoked_at    INTEGER
);
CREATE INDEX IF NOT EXISTS tokens_by_site ON tokens(site_id);

-- ---------------------------------------------------------------- Debian
-- A package's control file, kept once per .deb (content-addressed by the .deb's sha256).
CREATE TABLE IF NOT EXISTS deb_packages (
  sha256       TEXT PRIMARY KEY,
  package      TEXT NOT NULL,
  version      TEXT NOT NULL,
  architecture TEXT NOT NULL,
  source       TEXT NOT NULL,
  control      TEXT NOT NULL,
  created_at   INTEGER NOT NULL
);

-- (Schema 5: Release lists SHA256 only, so the SHA512 of index files is no longer kept.)
DROP TABLE IF EXISTS deb_index_digests;

-- ---------------------------------------------------------------- APK
-- A package's APKINDEX record, kept once per .apk (content-addressed by its sha256).
CREATE TABLE IF NOT EXISTS apk_packages (
  sha256     TEXT PRIMARY KEY,
  name       TEXT NOT NULL,
  version    TEXT NOT NULL,
  arch       TEXT NOT NULL,
  identity   TEXT NOT NULL,
  record     TEXT NOT NULL,
  pkginfo    TEXT NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- ---------------------------------------------------------------- Helm
-- A chart's metadata (Chart.yaml as JSON), kept once per .tgz (content-addressed by its sha256).
CREATE TABLE IF NOT EXISTS helm_charts (
  sha256     TEXT PRIMARY KEY,
  name       TEXT NOT NULL,
  version    TEXT NOT NULL,
  metadata   TEXT NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- ---------------------------------------------------------------- Formats
-- The bookkeeping every package format keeps the same way, keyed by the
-- format's name ('deb', 'apk', ...): the release lifecycle (activation, draft
-- and site deletion) treats every format alike, and a new format adds no table
-- here. `scope` is what one publication covers (a Debian dist, an APK
-- branch/repository); `part` is one index within it (a Debian
-- component/architecture, an APK architecture; '' for the whole scope).

-- A site's settings of a format, per scope (JSON; '' when the format has one).
CREATE TABLE IF NOT EXISTS format_settings (
  site_id INTEGER NOT NULL,
  format  TEXT NOT NULL,
  scope   TEXT NOT NULL,
  config  TEXT NOT NULL,
  PRIMARY KEY (site_id, format, scope)
) WITHOUT ROWID;

-- A site's public key for client-side signing, per format (the format's own
-- encoding: hex of binary OpenPGP for Debian, PEM for APK).
CREATE TABLE IF NOT EXISTS format_keys (
  site_id     INTEGER NOT NULL,
  format      TEXT NOT NULL,
  public_key  TEXT NOT NULL,
  fingerprint TEXT,
  created_at  INTEGER NOT NULL,
  PRIMARY KEY (site_id, format)
) WITHOUT ROWID;

-- Indexes a draft must regenerate before it can be activated.
CREATE TABLE IF NOT EXISTS format_dirty (
  release_id INTEGER NOT NULL,
  format     TEXT NOT NULL,
  scope      TEXT NOT NULL,
  part       TEXT NOT NULL,
  PRIMARY KEY (release_id, format, scope, part)
) WITHOUT ROWID;

-- The names whose records changed in a dirty index part (Debian: package
-- names of a component/architecture), so the index is spliced around them.
-- A dirty part without names is regenerated whole.
CREATE TABLE IF NOT EXISTS format_dirty_names (
  release_id INTEGER NOT NULL,
  format     TEXT NOT NULL,
  scope      TEXT NOT NULL,
  part       TEXT NOT NULL,
  name       TEXT NOT NULL,
  PRIMARY KEY (release_id, format, scope, part, name)
) WITHOUT ROWID;

-- How a published index file is cut into pieces (formats::pieces::Layout,
-- JSON), by the sha256 of its gzip form, with its plain and xz forms' sha256:
-- the next publication splices the pieces around the changed names.
CREATE TABLE IF NOT EXISTS format_layouts (
  site_id       INTEGER NOT NULL,
  sha256        TEXT NOT NULL,
  plain_sha256  TEXT NOT NULL,
  xz_sha256     TEXT NOT NULL,
  layout        TEXT NOT NULL,
  PRIMARY KEY (site_id, sha256)
) WITHOUT ROWID;

-- What a client-signed publication waits for: the user's signatures over a
-- blob (a Debian Release, an unsigned APK index stream).
CREATE TABLE IF NOT EXISTS format_pending_signatures (
  release_id INTEGER NOT NULL,
  format     TEXT NOT NULL,
  scope      TEXT NOT NULL,
  part       TEXT NOT NULL,
  sha256     TEXT NOT NULL,
  PRIMARY KEY (release_id, format, scope, part)
) WITHOUT ROWID;

-- State a format carries from release to release for a scope (JSON; Debian:
-- the by-hash files of the newest generations of a dist's indexes). A scope
-- with a ledger has been published in that release.
CREATE TABLE IF NOT EXISTS format_ledgers (
  release_id INTEGER NOT NULL,
  format     TEXT NOT NULL,
  scope      TEXT NOT NULL,
  ledger     TEXT NOT NULL,
  PRIMARY KEY (release_id, format, scope)
) WITHOUT ROWID;

-- Schema 6 moved the per-format tables above into them. Each legacy table is
-- created (empty on a new database), copied and dropped, so applying this
-- file again is safe.
CREATE TABLE IF NOT EXISTS deb_dists (site_id INTEGER NOT NULL, dist TEXT NOT NULL, config TEXT NOT NULL, PRIMARY KEY (site_id, dist)) WITHOUT ROWID;
INSERT OR IGNORE INTO format_settings(site_id, format, scope, config) SELECT site_id, 'deb', dist, config FROM deb_dists;
DROP TABLE IF EXISTS deb_dists;
CREATE TABLE IF NOT EXISTS deb_dirty (release_id INTEGER NOT NULL, dist TEXT NOT NULL, component TEXT NOT NULL, architecture TEXT NOT NULL, PRIMARY KEY (release_id, dist, component, architecture)) WITHOUT ROWID;
INSERT OR IGNORE INTO format_dirty(release_id, format, scope, part) SELECT release_id, 'deb', dist, component || '/' || architecture FROM deb_dirty;
DROP TABLE IF EXISTS deb_dirty;
CREATE TABLE IF NOT EXISTS deb_ledgers (release_id INTEGER NOT NULL, dist TEXT NOT NULL, ledger TEXT NOT NULL, PRIMARY KEY (release_id, dist)) WITHOUT ROWID;
INSERT OR IGNORE INTO format_ledgers(release_id, format, scope, ledger) SELECT release_id, 'deb', dist, ledger FROM deb_ledgers;
DROP TABLE IF EXISTS deb_ledgers;
CREATE TABLE IF NOT EXISTS deb_keys (site_id INTEGER PRIMARY KEY, public_key TEXT NOT NULL, fingerprint TEXT NOT NULL, created_at INTEGER NOT NULL);
INSERT OR IGNORE INTO format_keys(site_id, format, public_key, fingerprint, created_at) SELECT site_id, 'deb', public_key, fingerprint, created_at FROM deb_keys;
DROP TABLE IF EXISTS deb_keys;
CREATE TABLE IF NOT EXISTS deb_pending_signatures (release_id INTEGER NOT NULL, dist TEXT NOT NULL, release_sha256 TEXT NOT NULL, PRIMARY KEY (release_id, dist)) WITHOUT ROWID;
INSERT OR IGNORE INTO format_pending_signatures(release_id, format, scope, part, sha256) SELECT release_id, 'deb', dist, '', release_sha256 FROM deb_pending_signatures;
DROP TABLE IF EXISTS deb_pending_signatures;
CREATE TABLE IF NOT EXISTS apk_settings (site_id INTEGER PRIMARY KEY, config TEXT NOT NULL);
INSERT OR IGNORE INTO format_settings(site_id, format, scope, config) SELECT site_id, 'apk', '', config FROM apk_settings;
DROP TABLE IF EXISTS apk_settings;
CREATE TABLE IF NOT EXISTS apk_keys (site_id INTEGER PRIMARY KEY, public_key TEXT NOT NULL, created_at INTEGER NOT NULL);
INSERT OR IGNORE INTO format_keys(site_id, format, public_key, fingerprint, created_at) SELECT site_id, 'apk', public_key, NULL, created_at FROM apk_keys;
DROP TABLE IF EXISTS apk_keys;
CREATE TABLE IF NOT EXISTS apk_dirty (release_id INTEGER NOT NULL, branch TEXT NOT NULL, repository TEXT NOT NULL, arch TEXT NOT NULL, PRIMARY KEY (release_id, branch, repository, arch)) WITHOUT ROWID;
INSERT OR IGNORE INTO format_dirty(release_id, format, scope, part) SELECT release_id, 'apk', branch || '/' || repository, arch FROM apk_dirty;
DROP TABLE IF EXISTS apk_dirty;
CREATE TABLE IF NOT EXISTS apk_pending_signatures (release_id INTEGER NOT NULL, branch TEXT NOT NULL, repository TEXT NOT NULL, arch TEXT NOT NULL, stream_sha256 TEXT NOT NULL, PRIMARY KEY (release_id, branch, repository, arch)) WITHOUT ROWID;
INSERT OR IGNORE INTO format_pending_signatures(release_id, format, scope, part, sha256) SELECT release_id, 'apk', branch || '/' || repository, arch, stream_sha256 FROM apk_pending_signatures;
DROP TABLE IF EXISTS apk_pending_signatures;

-- ---------------------------------------------------------------- OCI registry
-- A blob upload in progress: each chunk received so far sits in R2 under
-- uploads/<id>/<offset> (offsets: JSON list, in order).
CREATE TABLE IF NOT EXISTS oci_uploads (
  id         TEXT PRIMARY KEY,
  site_id    INTEGER NOT NULL,
  name       TEXT NOT NULL,
  size       INTEGER NOT NULL,
  chunks     TEXT NOT NULL DEFAULT '[]',
  created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- A blob pushed to a repository that no manifest of the release references
-- yet: the site owns it (it is served and can be mounted), and the manifest
-- PUT that references it brings it into the release, so an image push is one
-- release. Unreferenced ones are forgotten after UPLOAD_TTL_SECONDS.
CREATE TABLE IF NOT EXISTS oci_staged_blobs (
  site_id    INTEGER NOT NULL,
  name       TEXT NOT NULL,
  sha256     TEXT NOT NULL,
  size       INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (site_id, name, sha256)
) WITHOUT ROWID;

-- Per-site registry settings (JSON: anonymous_pull, allow_delete).
CREATE TABLE IF NOT EXISTS oci_settings (
  site_id INTEGER PRIMARY KEY,
  config  TEXT NOT NULL
);

-- The declarative mirror's configuration, per site, as its files were sent
-- (checked first; see src/sync/config.rs): the images come from images_text,
-- the charts from charts_text. A document holding both is stored in both,
-- named mirror.yaml.
CREATE TABLE IF NOT EXISTS mirror_configs (
  site_id     INTEGER PRIMARY KEY,
  images_file TEXT,
  images_text TEXT,
  charts_file TEXT,
  charts_text TEXT,
  updated_at  INTEGER NOT NULL,
  -- The site's schedule (a cron expression; NULL: runs start by hand only)
  -- and the time from which it counts (set with it, moved by each scheduled run).
  schedule       TEXT,
  schedule_since INTEGER
);

-- A run of the declared mirror: the configuration it runs (a copy, so a
-- change during the run does not mix in), its progress, and the release it
-- produced (NULL: nothing changed, or it failed). Entries are resolved into
-- units (one per image or chart version) on the queue; the last unit to
-- finish publishes the run's release.
CREATE TABLE IF NOT EXISTS mirror_runs (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  site_id         INTEGER NOT NULL,
  trigger         TEXT NOT NULL CHECK (trigger IN ('manual', 'schedule', 'config')),
  only_name       TEXT,                  -- a selective run: one image or chart name
  nonce           TEXT NOT NULL,         -- how its creator finds its id
  config          TEXT NOT NULL,         -- JSON: the files as stored when it started
  state           TEXT NOT NULL CHECK (state IN ('running', 'publishing', 'done', 'failed')),
  entries_pending INTEGER NOT NULL,
  units_total     INTEGER NOT NULL DEFAULT 0,
  units_done      INTEGER NOT NULL DEFAULT 0,
  produced        INTEGER,               -- the release it activated
  message         TEXT,
  created_at      INTEGER NOT NULL,
  finished_at     INTEGER
);
CREATE INDEX IF NOT EXISTS mirror_runs_by_site ON mirror_runs(site_id, id);

-- A declared entry of a run, until its versions are resolved into units.
CREATE TABLE IF NOT EXISTS mirror_entries (
  run_id  INTEGER NOT NULL,
  idx     INTEGER NOT NULL,
  site_id INTEGER NOT NULL,
  state    TEXT NOT NULL CHECK (state IN ('pending', 'resolved')),
  reason   TEXT,                         -- why no version could be resolved
  attempts INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;

-- One version of one entry in a run, and what became of it. `changes` is
-- what it adds to the run's release (JSON list of {path, sha256, content_type}).
CREATE TABLE IF NOT EXISTS mirror_units (
  run_id        INTEGER NOT NULL,
  seq           INTEGER NOT NULL,
  site_id       INTEGER NOT NULL,
  kind          TEXT NOT NULL CHECK (kind IN ('image', 'chart')),
  entry         INTEGER NOT NULL,
  name          TEXT NOT NULL,           -- the entry's name as declared
  target        TEXT NOT NULL,           -- where it lands on the site
  version       TEXT NOT NULL,
  state         TEXT NOT NULL CHECK (state IN ('pending', 'copied', 'skipped', 'failed', 'pruned')),
  source_digest TEXT,                    -- sha256 hex at the source (image: the tag's manifest; chart: the archive)
  source_url    TEXT,                    -- a chart archive's URL
  digest        TEXT,                    -- what the site serves for it after the run
  reason        TEXT,
  bytes         INTEGER NOT NULL DEFAULT 0,
  blobs_copied  INTEGER NOT NULL DEFAULT 0,
  blobs_held    INTEGER NOT NULL DEFAULT 0,
  attempts      INTEGER NOT NULL DEFAULT 0,
  changes       TEXT,
  started_at    INTEGER,
  finished_at   INTEGER,
  PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

-- A declared image's index the site serves in place of the source's (its
-- platforms copied in part): which source digest it was made from, so the
-- next run skips it while the source is unchanged.
CREATE TABLE IF NOT EXISTS mirror_sources (
  site_id INTEGER NOT NULL,
  served  TEXT NOT NULL,
  source  TEXT NOT NULL,
  PRIMARY KEY (site_id, served)
) WITHOUT ROWID;

-- The pull-through mirror's cache, per site: what an upstream answered for a
-- tag (the manifest digest it pointed at), a manifest or a blob (stored in R2
-- under its digest, checked), or a 404 (sha256 NULL). `checked_at` is when the
-- upstream last confirmed it (tags are revalidated after a TTL, 404s expire).
CREATE TABLE IF NOT EXISTS oci_cache (
  site_id      INTEGER NOT NULL,
  upstream     TEXT NOT NULL,            -- '' = the default upstream, else its prefix
  repository   TEXT NOT NULL,            -- the name on the upstream
  kind         TEXT NOT NULL CHECK (kind IN ('tag', 'manifest', 'blob')),
  reference    TEXT NOT NULL,            -- the tag, or the sha256 hex
  sha256       TEXT,
  size         INTEGER,
  content_type TEXT,
  checked_at   INTEGER NOT NULL,
  PRIMARY KEY (site_id, upstream, repository, kind, reference)
) WITHOUT ROWID;

-- Schema 5 (site_blobs): what a site referenced before it existed counts as held.
INSERT OR IGNORE INTO site_blobs(site_id, sha256, created_at)
  SELECT DISTINCT site_id, sha256, 0 FROM path_versions;
INSERT OR IGNORE INTO site_blobs(site_id, sha256, created_at)
  SELECT DISTINCT r.site_id, c.sha256, 0 FROM release_changes c JOIN releases r ON r.id = c.release_id WHERE c.sha256 IS NOT NULL;
INSERT OR IGNORE INTO site_blobs(site_id, sha256, created_at)
  SELECT DISTINCT site_id, sha256, 0 FROM oci_staged_blobs;
INSERT OR IGNORE INTO site_blobs(site_id, sha256, created_at)
  SELECT DISTINCT site_id, sha256, 0 FROM oci_cache WHERE sha256 IS NOT NULL;
-- Rows of sites deleted before schema 5 removed them (staged blobs, mirror
-- cache); the ids they name are never given again.
INSERT INTO schema_meta(key, value)
  SELECT 'site_id_high', CAST(MAX(COALESCE(m, 0)) AS TEXT) FROM (
    SELECT MAX(id) AS m FROM sites UNION ALL SELECT MAX(site_id) FROM oci_staged_blobs
    UNION ALL SELECT MAX(site_id) FROM oci_cache UNION ALL SELECT MAX(site_id) FROM oci_uploads) WHERE true
  ON CONFLICT(key) DO UPDATE SET value = CAST(MAX(CAST(schema_meta.value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT);
DELETE FROM oci_staged_blobs WHERE site_id NOT IN (SELECT id FROM sites);
DELETE FROM oci_cache WHERE site_id NOT IN (SELECT id FROM sites);
DELETE FROM site_blobs WHERE site_id NOT IN (SELECT id FROM sites);

INSERT INTO schema_meta(key, value) VALUES ('version', '11')
  ON CONFLICT(key) DO UPDATE SET value = excluded.value;
