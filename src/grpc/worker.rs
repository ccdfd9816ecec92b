//! `kawa transcoder`: a worker that runs FFmpeg for the nodes of a cluster. A node opens
//! one `Transcode` stream per encode: the job, then the source's frames; the worker runs
//! FFmpeg ([`crate::transcode::ffmpeg`]) on the command line it builds itself from the
//! job's rungs and its own settings, and streams the rungs' frames back until FFmpeg
//! exits. It announces itself in Redis (address and load) every renewal.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::{Semaphore, mpsc};
use tonic::{Request, Response, Status, Streaming};

use super::TokenCheck;
use super::proto::transcode_input::Input;
use super::proto::transcode_output::Output;
use super::proto::transcoder_service_server::{TranscoderService, TranscoderServiceServer};
use super::proto::{FrameBatch, TranscodeInput, TranscodeOutput};
use crate::cluster::workers::WorkerInfo;
use crate::cluster::{Cluster, ClusterError};
use crate::config::{HlsSettings, Settings};
use crate::transcode::demux::RungDemuxer;
use crate::transcode::ffmpeg::{self, EncodeSpec, STDIN_QUEUE};
use crate::transcode::wire::{self, MAX_FRAME_BYTES};

/// How long a node may take to send the job after opening the stream.
const JOB_WAIT: Duration = Duration::from_secs(5);
/// Batches of frames queued for the node before FFmpeg's output waits.
const OUTPUT_QUEUE: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(
        "a transcoder worker belongs to a cluster: set cluster.enabled, store.redis_url and cluster.token"
    )]
    NotInACluster,
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("transcoder.advertise_url is needed: transcoder.addr listens on every address")]
    NoAddress,
    #[error("gRPC server failed: {0}")]
    Server(#[from] tonic::transport::Error),
}

pub struct TranscoderWorker {
    hls: HlsSettings,
    slots: Arc<Semaphore>,
    running: Arc<AtomicU32>,
}

type Answers = Pin<Box<dyn Stream<Item = Result<TranscodeOutput, Status>> + Send>>;

#[tonic::async_trait]
impl TranscoderService for TranscoderWorker {
    type TranscodeStream = Answers;

    async fn transcode(
        &self,
        request: Request<Streaming<TranscodeInput>>,
    ) -> Result<Response<Answers>, Status> {
        let permit = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted("this worker runs all the encodes it may"))?;
        let mut input = request.into_inner();
        let first = tokio::time::timeout(JOB_WAIT, input.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no job"))??;
        let Some(TranscodeInput {
            input: Some(Input::Job(job)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message must be the job",
            ));
        };
        let (plan, reference) =
            wire::plan(&job).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let rungs = plan.scaled().count();
        let extras = crate::transcode::Extras {
            opus: job.opus && plan.has_audio,
            ..crate::transcode::Extras::NONE
        };
        let args = plan.ffmpeg_args(&self.hls, extras);
        let span = tracing::info_span!("encode", rungs);
        let (answers, answered) = mpsc::channel::<Result<TranscodeOutput, Status>>(OUTPUT_QUEUE);
        let to_node = answers.clone();
        let on_frames = move |frames: Vec<(usize, crate::media::frame::Frame)>| {
            let to_node = to_node.clone();
            async move {
                let batch = FrameBatch {
                    frames: frames
                        .iter()
                        .map(|(rung, frame)| wire::to_wire(frame, *rung as u32))
                        .collect(),
                };
                let answer = TranscodeOutput {
                    output: Some(Output::Frames(batch)),
                };
                to_node.send(Ok(answer)).await.is_ok()
            }
        };
        let spec = EncodeSpec {
            program: &self.hls.ffmpeg_path,
            nice: self.hls.ffmpeg_nice,
            args: &args,
            has_video: plan.has_video,
            has_audio: plan.has_audio,
            video_codec: plan.video_codec,
            replay: STDIN_QUEUE,
            generation: 0,
            // A node whose encode runs on a worker makes its thumbnails on demand.
            on_thumbnail: None,
            // WebRTC's audio for the node, when it asked: dropped when the node reads
            // slower than FFmpeg writes (audio for WebRTC is live or useless).
            on_opus: extras.opus.then(|| {
                let to_node = answers.clone();
                Box::new(move |packets| {
                    let answer = TranscodeOutput {
                        output: Some(Output::Opus(wire::opus_to_wire(packets))),
                    };
                    let _ = to_node.try_send(Ok(answer));
                }) as Box<dyn Fn(_) + Send + Sync>
            }),
        };
        let output = RungDemuxer::new(rungs, reference);
        let (encode, run) = ffmpeg::start(spec, output, span.clone(), on_frames)
            .map_err(|e| Status::internal(format!("cannot start FFmpeg: {e}")))?;
        tracing::info!(parent: &span, "encode started");
        self.running.fetch_add(1, Ordering::Relaxed);
        let (mut feeder, kill) = (encode.feeder, encode.kill);
        let feed_span = span.clone();
        tokio::spawn(async move {
            loop {
                match input.message().await {
                    Ok(Some(TranscodeInput {
                        input: Some(Input::Frame(m)),
                    })) => match wire::from_wire(m) {
                        Ok((_, frame)) => {
                            if let Err(e) = feeder.feed(&frame) {
                                tracing::warn!(parent: &feed_span, error = %e, "frame not muxed");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(parent: &feed_span, error = %e, "bad frame from the node; encode stopped");
                            break;
                        }
                    },
                    Ok(Some(TranscodeInput {
                        input: Some(Input::Finish(_)),
                    })) => {
                        // FFmpeg flushes its last output and exits by itself.
                        feeder.finish();
                        return;
                    }
                    Ok(Some(_)) => {
                        tracing::warn!(parent: &feed_span, "unexpected message from the node; encode stopped");
                        break;
                    }
                    // The node went away without finishing: nobody wants the output.
                    Ok(None) | Err(_) => break,
                }
            }
            let _ = kill.send(());
        });
        let running = Arc::clone(&self.running);
        tokio::spawn(async move {
            let status = run.await;
            tracing::info!(parent: &span, %status, "encode ended");
            let _ = answers
                .send(Ok(TranscodeOutput {
                    output: Some(Output::Exited(status)),
                }))
                .await;
            running.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
        let stream = futures_util::stream::unfold(answered, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Runs the worker until SIGTERM or Ctrl-C.
pub async fn run(settings: Settings) -> Result<(), WorkerError> {
    let cluster = Cluster::from_settings(&settings)?.ok_or(WorkerError::NotInACluster)?;
    let addr = settings.transcoder.addr;
    let incoming = tonic::transport::server::TcpIncoming::bind(addr)
        .map_err(|source| WorkerError::Bind { addr, source })?;
    let addr = incoming.local_addr().unwrap_or(addr);
    let url = if settings.transcoder.advertise_url.is_empty() {
        if addr.ip().is_unspecified() {
            return Err(WorkerError::NoAddress);
        }
        format!("http://{addr}")
    } else {
        settings
            .transcoder
            .advertise_url
            .trim_end_matches('/')
            .to_owned()
    };
    let max_jobs = settings.transcoder.max_jobs;
    let running = Arc::new(AtomicU32::new(0));
    let worker = TranscoderWorker {
        hls: settings.hls.clone(),
        slots: Arc::new(Semaphore::new(max_jobs)),
        running: Arc::clone(&running),
    };
    let id = cluster.node_id().to_owned();
    {
        let (cluster, id, url) = (Arc::clone(&cluster), id.clone(), url.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(cluster.renew_every());
            loop {
                tick.tick().await;
                let info = WorkerInfo {
                    id: id.clone(),
                    url: url.clone(),
                    jobs: running.load(Ordering::Relaxed),
                };
                if let Err(e) = cluster.announce_worker(&info).await {
                    tracing::warn!(error = %e, "cannot announce this worker");
                }
            }
        });
    }
    let service = TranscoderServiceServer::new(worker)
        .max_decoding_message_size(MAX_FRAME_BYTES * 2)
        .max_encoding_message_size(MAX_FRAME_BYTES * 2);
    tracing::info!(worker = %id, grpc = %addr, %url, max_jobs, "kawa transcoder is up");
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            service,
            TokenCheck::new(cluster.token().expose()),
        ))
        .serve_with_incoming_shutdown(incoming, crate::server::shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
}
