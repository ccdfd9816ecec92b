//! The `kawa` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kawa::config::Settings;

/// Kawa: RTMP in, adaptive-bitrate HLS out.
#[derive(Parser)]
#[command(name = "kawa", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: REST API, RTMP ingest, gRPC, HLS.
    ///
    /// Settings come from config/default.toml (built in), then --config FILE, then
    /// KAWA_* environment variables (e.g. KAWA_HTTP__ADDR=127.0.0.1:8888).
    Serve {
        /// A TOML file layered over the defaults.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Tools for operators and developers.
    #[command(subcommand)]
    Tools(Tool),
}

#[derive(Subcommand)]
enum Tool {
    /// Run an FLV file through the ingest's media path (FLV tags -> typed frames ->
    /// MPEG-TS), to check the core against any encoder's output with ffprobe.
    Remux {
        /// An FLV file (e.g. `ffmpeg ... -f flv in.flv`, or an OBS recording as FLV).
        input: PathBuf,
        /// Where to write the MPEG-TS.
        output: PathBuf,
    },
}

/// Exit code for configuration errors, so scripts can tell them from crashes.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let settings = match Settings::load(config.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("kawa: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            kawa::telemetry::init(&settings.log);
            let result = actix_web::rt::System::new().block_on(kawa::server::serve(settings));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("kawa: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Tools(Tool::Remux { input, output }) => match remux(&input, &output) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kawa: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn remux(input: &std::path::Path, output: &std::path::Path) -> Result<(), String> {
    let flv = std::fs::read(input).map_err(|e| format!("reading {}: {e}", input.display()))?;
    let mut ts = Vec::with_capacity(flv.len() + flv.len() / 8);
    let stats = kawa::media::remux::remux_flv_to_ts(&flv, &mut ts)
        .map_err(|e| format!("{}: {e}", input.display()))?;
    std::fs::write(output, &ts).map_err(|e| format!("writing {}: {e}", output.display()))?;
    println!(
        "{} video frames ({} keyframes), {} audio frames -> {} ({} bytes)",
        stats.video_frames,
        stats.keyframes,
        stats.audio_frames,
        output.display(),
        ts.len()
    );
    Ok(())
}
