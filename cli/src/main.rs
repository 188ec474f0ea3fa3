//! `wharf`: the command-line tool for Wharf's admin API. See `wharf --help`
//! and `cli/README.md` (generated from these definitions).

mod client;
mod commands;
mod config;
mod keys;
mod progress;
mod publish;
mod sign;
mod table;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "wharf", version, about = "Publish packages to Wharf and manage its sites, releases, tokens and mirrors", long_about = None)]
#[command(after_help = "Configuration: `wharf login --url URL` stores a profile (URL and token) in ~/.config/wharf/config.toml (or $WHARF_CONFIG).\n\
WHARF_URL, WHARF_TOKEN, WHARF_PROFILE and WHARF_SITE override it. Exit status: 0 on success, 1 on a failure (the server's code and message are printed), 2 on a usage error.")]
pub struct Cli {
    /// The profile to use (default: the profile file's default).
    #[arg(long, global = true, env = "WHARF_PROFILE")]
    pub profile: Option<String>,
    /// The Wharf admin URL (overrides the profile's).
    #[arg(long, global = true, env = "WHARF_URL")]
    pub url: Option<String>,
    /// Print JSON (the API's answers) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Store a profile: the admin URL and a token (read from WHARF_TOKEN or stdin).
    Login {
        /// The admin URL, e.g. https://admin.example.com
        #[arg(long)]
        url: String,
        /// The profile's name.
        #[arg(long = "name", default_value = "default")]
        name: String,
        /// Make this profile the default.
        #[arg(long)]
        default: bool,
    },
    /// Forget a profile.
    Logout {
        #[arg(long = "name", default_value = "default")]
        name: String,
    },
    /// Show the token in use: its id, scope and site.
    Whoami,
    /// Sites.
    #[command(subcommand)]
    Site(SiteCmd),
    /// A site's hostnames.
    #[command(subcommand)]
    Host(HostCmd),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Releases: list, inspect, compare, create, activate, roll back, delete.
    #[command(subcommand)]
    Release(ReleaseCmd),
    /// Debian repositories.
    #[command(subcommand)]
    Deb(DebCmd),
    /// Alpine (APK) repositories.
    #[command(subcommand)]
    Apk(ApkCmd),
    /// Helm chart repositories.
    #[command(subcommand)]
    Helm(HelmCmd),
    /// The OCI registry: settings and the pull-through cache.
    #[command(subcommand)]
    Oci(OciCmd),
    /// The declarative mirror: images.yaml and charts.yaml, runs.
    #[command(subcommand)]
    Mirror(MirrorCmd),
    /// What users of a site need: keys and client configuration, ready to paste.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Shell completions (bash, zsh, fish, powershell, elvish) on stdout.
    Completions { shell: clap_complete::Shell },
}

#[derive(Args, Debug, Clone)]
pub struct SiteArg {
    /// The site (default: WHARF_SITE, else the profile's site).
    #[arg(long, env = "WHARF_SITE")]
    pub site: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum SiteCmd {
    /// Create a site (global admin).
    Create { name: String },
    /// The sites the token sees.
    List,
    /// A site with its hostnames.
    Show { name: String },
    /// Delete a site and everything it owns.
    Delete {
        name: String,
        /// Required: deleting cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum HostCmd {
    /// Serve the site on a hostname (a hostname belongs to one site).
    Add {
        #[command(flatten)]
        site: SiteArg,
        hostname: String,
    },
    /// Stop serving the site on a hostname.
    #[command(alias = "remove")]
    Rm {
        #[command(flatten)]
        site: SiteArg,
        hostname: String,
    },
    /// The site's hostnames.
    List {
        #[command(flatten)]
        site: SiteArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token; the secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// read, publish or admin.
        #[arg(long, value_parser = ["read", "publish", "admin"])]
        scope: String,
        /// Confine it to a site (default: a global token).
        #[arg(long)]
        site: Option<String>,
        /// Lifetime in seconds.
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// Tokens (of one site with --site).
    List {
        #[arg(long)]
        site: Option<String>,
    },
    /// Revoke a token by its id.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
pub enum ReleaseCmd {
    /// The site's releases, newest first.
    List {
        #[command(flatten)]
        site: SiteArg,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One release (and its paths with --paths).
    Show {
        #[command(flatten)]
        site: SiteArg,
        id: i64,
        /// Also list its paths.
        #[arg(long)]
        paths: bool,
    },
    /// Paths added, removed and changed from one release to another.
    Diff {
        #[command(flatten)]
        site: SiteArg,
        from: i64,
        to: i64,
    },
    /// A new draft (from the active release unless told otherwise).
    Create {
        #[command(flatten)]
        site: SiteArg,
        /// active, empty or a release id.
        #[arg(long, default_value = "active")]
        from: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Activate a draft (compare-and-swap against the release it was made from).
    Activate {
        #[command(flatten)]
        site: SiteArg,
        id: i64,
    },
    /// Re-activate an earlier release (default: the one before the active one).
    Rollback {
        #[command(flatten)]
        site: SiteArg,
        #[arg(long)]
        to: Option<i64>,
    },
    /// Delete a draft.
    Delete {
        #[command(flatten)]
        site: SiteArg,
        id: i64,
    },
}

#[derive(Args, Debug)]
pub struct AddOpts {
    /// Files hashed and uploaded at once.
    #[arg(long, short, default_value_t = 4)]
    pub jobs: usize,
    /// Leave the draft unactivated and print its id.
    #[arg(long)]
    pub no_activate: bool,
    /// Replace packages of the same name, version and architecture with other content.
    #[arg(long)]
    pub replace: bool,
}

#[derive(Subcommand, Debug)]
pub enum DebCmd {
    /// Publish .deb packages in one command: all of them or none.
    Add {
        #[command(flatten)]
        site: SiteArg,
        #[arg(long)]
        dist: String,
        #[arg(long, default_value = "main")]
        component: String,
        #[command(flatten)]
        opts: AddOpts,
        /// Sign the Release here with this gpg key (client-signed dists).
        #[arg(long, value_name = "KEYID")]
        sign_with: Option<String>,
        /// Sign the Release here with this armored OpenPGP secret key file
        /// (passphrase in WHARF_SIGN_PASSPHRASE).
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Sign a draft's Release here and upload the signatures.
    Sign {
        #[command(flatten)]
        site: SiteArg,
        #[arg(long)]
        release: i64,
        #[arg(long)]
        dist: String,
        #[arg(long, value_name = "KEYID")]
        sign_with: Option<String>,
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
    },
    /// Dist settings.
    #[command(subcommand)]
    Dist(DistCmd),
}

#[derive(Subcommand, Debug)]
pub enum DistCmd {
    /// Set a dist's settings (only the options given change).
    Set {
        #[command(flatten)]
        site: SiteArg,
        dist: String,
        #[arg(long)]
        origin: Option<String>,
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        suite: Option<String>,
        #[arg(long)]
        codename: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Comma-separated.
        #[arg(long, value_delimiter = ',')]
        components: Option<Vec<String>>,
        /// Comma-separated.
        #[arg(long, value_delimiter = ',')]
        architectures: Option<Vec<String>>,
        #[arg(long)]
        valid_until_days: Option<u32>,
        #[arg(long)]
        by_hash_keep: Option<u32>,
        #[arg(long, value_parser = ["server", "client"])]
        signing: Option<String>,
        /// Comma-separated: xz, gz, none.
        #[arg(long, value_delimiter = ',')]
        compressions: Option<Vec<String>>,
    },
    /// Show a dist's settings.
    Get {
        #[command(flatten)]
        site: SiteArg,
        dist: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApkCmd {
    /// Publish .apk packages in one command: all of them or none.
    Add {
        #[command(flatten)]
        site: SiteArg,
        #[arg(long)]
        branch: String,
        #[arg(long, default_value = "main")]
        repo: String,
        #[command(flatten)]
        opts: AddOpts,
        /// Sign the indexes here with this RSA private key (client-signed repositories).
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Publish a draft's repository, sign its changed indexes here and upload the signatures.
    Sign {
        #[command(flatten)]
        site: SiteArg,
        #[arg(long)]
        release: i64,
        #[arg(long)]
        branch: String,
        #[arg(long, default_value = "main")]
        repo: String,
        #[arg(long, value_name = "FILE")]
        sign_key: PathBuf,
    },
    /// The site's APK settings: shown, or changed by the options given.
    Settings {
        #[command(flatten)]
        site: SiteArg,
        /// Comma-separated.
        #[arg(long, value_delimiter = ',')]
        architectures: Option<Vec<String>>,
        #[arg(long, value_parser = ["server", "client"])]
        signing: Option<String>,
        #[arg(long)]
        key_name: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum HelmCmd {
    /// Publish chart archives in one command: all of them or none.
    Add {
        #[command(flatten)]
        site: SiteArg,
        #[arg(long)]
        repo: String,
        #[command(flatten)]
        opts: AddOpts,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum OciCmd {
    /// The site's registry settings (upstreams, anonymous pulls, deletes, TTLs).
    #[command(subcommand)]
    Settings(OciSettingsCmd),
    /// The pull-through mirror's cache.
    #[command(subcommand)]
    Cache(OciCacheCmd),
}

#[derive(Subcommand, Debug)]
pub enum OciSettingsCmd {
    /// Show the settings.
    Get {
        #[command(flatten)]
        site: SiteArg,
    },
    /// Replace the settings with a JSON document (a file, or - for stdin).
    Set {
        #[command(flatten)]
        site: SiteArg,
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum OciCacheCmd {
    /// What each upstream answered and when it was last confirmed.
    List {
        #[command(flatten)]
        site: SiteArg,
        #[arg(long)]
        upstream: Option<String>,
        #[arg(long)]
        repository: Option<String>,
    },
    /// Forget cache entries (all, an upstream's, a repository's).
    Purge {
        #[command(flatten)]
        site: SiteArg,
        #[arg(long)]
        upstream: Option<String>,
        #[arg(long)]
        repository: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum MirrorCmd {
    /// Check images.yaml / charts.yaml / mirror.yaml here, offline, with the server's own rules.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Store the files on the site (a changed file starts a run).
    Apply {
        #[command(flatten)]
        site: SiteArg,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Follow the run it started until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Start a run: everything, or one image or chart.
    Run {
        #[command(flatten)]
        site: SiteArg,
        #[arg(long, conflicts_with = "chart")]
        image: Option<String>,
        #[arg(long)]
        chart: Option<String>,
        /// Follow its progress until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// The site's runs, or one run in detail.
    Runs {
        #[command(flatten)]
        site: SiteArg,
        id: Option<i64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Print, for each format the site serves, what a user needs to set it up.
    Show {
        #[command(flatten)]
        site: SiteArg,
        /// The hostname to write (default: the site's first).
        #[arg(long)]
        host: Option<String>,
    },
}

fn main() -> ExitCode {
    #[cfg(unix)]
    // SAFETY: before any thread starts; restores the default action of one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match client::api_failure(&e) {
                Some(f) => eprintln!("error: {f}"),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wharf").chain(args.iter().copied()))
    }

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    /// cli/REFERENCE.md is generated from these definitions
    /// (`WHARF_UPDATE_REFERENCE=1 cargo test -p wharf-cli reference` writes it).
    #[test]
    fn the_reference_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("REFERENCE.md");
        let text = clap_markdown::help_markdown::<Cli>();
        if std::env::var_os("WHARF_UPDATE_REFERENCE").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(on_disk == text, "cli/REFERENCE.md is out of date: WHARF_UPDATE_REFERENCE=1 cargo test -p wharf-cli reference");
    }

    #[test]
    fn deb_add_takes_files_and_options() {
        let c = parse(&["--json", "deb", "add", "--site", "apt", "--dist", "stable", "-j", "8", "--no-activate", "a.deb", "b.deb"]).unwrap();
        assert!(c.json);
        let Command::Deb(DebCmd::Add { site, dist, component, opts, files, sign_with, .. }) = c.command else { panic!() };
        assert_eq!((site.site.as_deref(), dist.as_str(), component.as_str()), (Some("apt"), "stable", "main"));
        assert_eq!((opts.jobs, opts.no_activate, opts.replace, sign_with), (8, true, false, None));
        assert_eq!(files, [PathBuf::from("a.deb"), PathBuf::from("b.deb")]);
        assert!(parse(&["deb", "add", "--dist", "stable"]).is_err(), "files are required");
    }

    #[test]
    fn usage_errors_are_refused() {
        assert!(parse(&["token", "create", "--name", "ci", "--scope", "root"]).is_err());
        assert!(parse(&["mirror", "run", "--image", "a", "--chart", "b"]).is_err());
        assert!(parse(&["site", "delete"]).is_err());
        let c = parse(&["deb", "dist", "set", "stable", "--compressions", "xz,gz", "--site", "s"]).unwrap();
        let Command::Deb(DebCmd::Dist(DistCmd::Set { compressions, .. })) = c.command else { panic!() };
        assert_eq!(compressions, Some(vec!["xz".to_string(), "gz".to_string()]));
    }
}
