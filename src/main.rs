//! The `portcullis` command line. Thin: parses arguments and hands over to `app`/`demo`.

/// See Cargo.toml: glibc malloc's arena locks cost the request path more than everything it
/// does itself.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use portcullis::config::Config;
use portcullis::telemetry::{self, LogFormat};

/// Access gateway: only signed-in users on compliant devices reach your web apps.
#[derive(Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; boxing the large variant would only obscure the clap definitions.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a configuration file.
    Serve {
        /// Path to the TOML configuration (see config/portcullis.example.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file: exit 0 with a summary, or list every error with its key.
    CheckConfig {
        /// Path to the TOML configuration.
        file: PathBuf,
    },
    /// The Entra ID / Graph / Jamf Pro emulator: serve it, or get a token from a running one
    /// (only in builds with the `demo` feature).
    #[cfg(feature = "demo")]
    Emulator {
        #[command(subcommand)]
        command: portcullis::demo::EmulatorCommand,
    },
    /// Call the admin API of a running gateway (exit codes: 0 ok, 1 the operation reported a
    /// failure, 2 usage, 3 gateway unreachable, 4 token refused, 5 not found, 6 request rejected).
    Admin {
        /// The admin listener, e.g. http://127.0.0.1:9090.
        #[arg(long, env = "PORTCULLIS_ADMIN_URL", default_value = "http://127.0.0.1:9090")]
        url: String,
        /// An admin or read-only API token (prefer the environment variable over the flag).
        #[arg(long, env = "PORTCULLIS_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: portcullis::admin::cli::AdminCommand,
    },
    /// Run the demo: gateway and demo app on loopback, with a development certificate (only
    /// in builds with the `demo` feature).
    #[cfg(feature = "demo")]
    Demo {
        /// Shift every demo port by this much.
        #[arg(long, default_value_t = 0)]
        port_offset: u16,
        /// Keep the demo's data (certificates) here instead of a fresh temporary directory.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Gateway nodes to run (1 to 9), node I on the demo's gateway and admin ports + 100·I,
        /// sharing the emulator and the demo app; more than one needs `--store postgres://…`.
        #[arg(long, default_value_t = 1)]
        nodes: u16,
        /// The store: `postgres://USER@HOST:PORT/DATABASE` (several nodes) or `sqlite://PATH`;
        /// default: SQLite in the data directory.
        #[arg(long)]
        store: Option<String>,
        /// Internal: run as node I of a demo cluster another `portcullis demo` started.
        #[arg(long, hide = true)]
        node: Option<u16>,
    },
}

/// Exit code for configuration errors (sysexits EX_CONFIG).
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(cfg) => match portcullis::app::check(&cfg, &portcullis::app::ProcessEnv) {
                Ok(()) => {
                    println!("{}: OK: {}", file.display(), cfg.summary());
                    ExitCode::SUCCESS
                }
                Err(errors) => report(&file, &errors),
            },
            Err(errors) => report(&file, &errors),
        },
        Command::Serve { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(errors) => return report(&config, &errors),
            };
            match portcullis::app::serve(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        #[cfg(feature = "demo")]
        Command::Emulator { command } => match portcullis::demo::emulator(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("portcullis emulator: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Admin {
            url,
            token,
            json,
            command,
        } => ExitCode::from(portcullis::admin::cli::run(&url, &token, json, command) as u8),
        #[cfg(feature = "demo")]
        Command::Demo {
            port_offset,
            data,
            nodes,
            store,
            node,
        } => {
            let opts = portcullis::demo::DemoOptions {
                port_offset,
                data,
                nodes,
                store,
                node,
            };
            match portcullis::demo::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portcullis demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn report(file: &std::path::Path, errors: &portcullis::config::ConfigErrors) -> ExitCode {
    eprintln!("{}: {} error(s):", file.display(), errors.0.len());
    for e in &errors.0 {
        eprintln!("  {e}");
    }
    ExitCode::from(EX_CONFIG)
}
