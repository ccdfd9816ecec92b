//! The `kawa` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kawa::config::Settings;

#[cfg(not(feature = "fault-injection"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The chaos benchmark's build counts live heap bytes (`kawa_heap_live_bytes`).
#[cfg(feature = "fault-injection")]
#[global_allocator]
static ALLOCATOR: kawa::memory::Counted<mimalloc::MiMalloc> =
    kawa::memory::Counted(mimalloc::MiMalloc);

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
    /// Run FFmpeg for the nodes of a cluster (a transcoder worker, reached over gRPC).
    ///
    /// Uses the [cluster], [store], [hls] and [transcoder] settings, like `serve`.
    Transcoder {
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
    /// MPEG-TS, or CMAF cut as the live packager cuts it), to check the core against any
    /// encoder's output with ffprobe.
    Remux {
        /// An FLV file (e.g. `ffmpeg ... -f flv in.flv`, or an OBS recording as FLV).
        input: PathBuf,
        /// Where to write: `.mp4` or `.m4s` gives CMAF (init segment, then every part),
        /// anything else MPEG-TS.
        output: PathBuf,
        /// CMAF: target segment length in seconds.
        #[arg(long, default_value_t = 2.0)]
        segment_seconds: f64,
        /// CMAF: target part length in seconds.
        #[arg(long, default_value_t = 0.5)]
        part_seconds: f64,
    },
}

/// Exit code for configuration errors, so scripts can tell them from crashes.
const EXIT_CONFIG: u8 = 2;

/// Loads the settings (exit code 2 when they are wrong), sets up logging, and runs
/// `command` with them.
fn run(config: Option<PathBuf>, command: impl FnOnce(Settings) -> Result<(), String>) -> ExitCode {
    let settings = match Settings::load(config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kawa: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    kawa::telemetry::init(&settings.log);
    if let Err(e) = kawa::memory::no_huge_pages() {
        tracing::warn!(error = %e, "transparent huge pages stay on");
    }
    match command(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kawa: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => run(config, |settings| {
            actix_web::rt::System::new()
                .block_on(kawa::server::serve(settings))
                .map_err(|e| e.to_string())
        }),
        Command::Transcoder { config } => run(config, |settings| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(kawa::grpc::worker::run(settings))
                .map_err(|e| e.to_string())
        }),
        Command::Tools(Tool::Remux {
            input,
            output,
            segment_seconds,
            part_seconds,
        }) => match remux(&input, &output, segment_seconds, part_seconds) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kawa: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn remux(
    input: &std::path::Path,
    output: &std::path::Path,
    segment_seconds: f64,
    part_seconds: f64,
) -> Result<(), String> {
    use kawa::media::{cmaf::SegmenterSettings, remux};
    let flv = std::fs::read(input).map_err(|e| format!("reading {}: {e}", input.display()))?;
    let mut ts = Vec::with_capacity(flv.len() + flv.len() / 8);
    let cmaf = output.extension().is_some_and(|e| e == "mp4" || e == "m4s");
    let stats = if cmaf {
        let settings = SegmenterSettings::from_seconds(segment_seconds, part_seconds);
        remux::remux_flv_to_cmaf(&flv, settings, &mut ts)
    } else {
        remux::remux_flv_to_ts(&flv, &mut ts)
    }
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
