//! The gRPC side of a Transcoder whose FFmpeg runs on a transcoder worker: the job and
//! the source's frames go out on one bidirectional stream, the rungs' frames come back
//! on it until the worker's FFmpeg exits.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot};

use crate::actors::session::{Encoded, StreamSession};
use crate::cluster::Cluster;
use crate::cluster::workers::{WorkerInfo, least_loaded};
use crate::grpc::bearer;
use crate::grpc::proto::transcode_output::Output;
use crate::grpc::proto::transcoder_service_client::TranscoderServiceClient;
use crate::grpc::proto::{TranscodeInput, TranscodeOutput};
use crate::transcode::wire::{self, MAX_FRAME_BYTES};

/// A worker that does not answer this fast is taken for dead.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The least loaded live worker, not one this node just saw fail.
pub async fn pick(cluster: &Cluster) -> Option<WorkerInfo> {
    match cluster.workers().await {
        Ok(workers) => least_loaded(&workers, &cluster.failed_workers()).cloned(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list transcoder workers");
            None
        }
    }
}

/// Where one encode's answers go.
pub struct Encode {
    pub rungs: usize,
    pub generation: u64,
    pub session: Addr<StreamSession>,
    /// WebRTC's audio, when the job asked the worker for Opus.
    pub opus_out: Option<(crate::webrtc::WebRtc, String)>,
}

/// Runs one encode on `worker`: sends what arrives on `input`, hands each batch of the
/// rungs' frames to the session (waiting for it to be taken) and the Opus packets to
/// the WebRTC server, and returns how it ended, and whether the worker was lost
/// (unreachable or gone mid-encode).
pub async fn run(
    cluster: Arc<Cluster>,
    worker: WorkerInfo,
    input: mpsc::Receiver<TranscodeInput>,
    encode: Encode,
    killed: oneshot::Receiver<()>,
) -> (String, bool) {
    let Encode {
        rungs,
        generation,
        session,
        opus_out,
    } = encode;
    let connect = async {
        let channel = tonic::transport::Endpoint::from_shared(worker.url.clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let token = bearer(cluster.token().expose());
        let client = TranscoderServiceClient::with_interceptor(
            channel,
            move |mut request: tonic::Request<()>| {
                if let Some(token) = token.clone() {
                    request.metadata_mut().insert("authorization", token);
                }
                Ok(request)
            },
        )
        .max_decoding_message_size(MAX_FRAME_BYTES * 2)
        .max_encoding_message_size(MAX_FRAME_BYTES * 2);
        Ok::<_, String>(client)
    };
    let mut client = match connect.await {
        Ok(client) => client,
        Err(e) => {
            cluster.worker_failed(&worker.url);
            return (
                format!("transcoder worker {} unreachable: {e}", worker.id),
                true,
            );
        }
    };
    let outbound =
        futures_util::stream::unfold(
            input,
            |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
        );
    let mut answers = match client.transcode(outbound).await {
        Ok(answers) => answers.into_inner(),
        Err(status) => {
            cluster.worker_failed(&worker.url);
            let status = format!(
                "transcoder worker {} refused the job: {}",
                worker.id,
                status.message()
            );
            return (status, true);
        }
    };
    let read = async {
        loop {
            match answers.message().await {
                Ok(Some(TranscodeOutput {
                    output: Some(Output::Frames(batch)),
                })) => {
                    let mut frames = Vec::with_capacity(batch.frames.len());
                    for m in batch.frames {
                        match wire::from_wire(m) {
                            Ok((rung, frame)) if rung < rungs => frames.push((rung, frame)),
                            Ok((rung, _)) => {
                                let status = format!(
                                    "transcoder worker {} sent rung {rung} of {rungs}",
                                    worker.id
                                );
                                return (status, false);
                            }
                            Err(e) => {
                                let status = format!(
                                    "transcoder worker {} sent a bad frame: {e}",
                                    worker.id
                                );
                                return (status, false);
                            }
                        }
                    }
                    if session.send(Encoded { generation, frames }).await.is_err() {
                        return ("the session is gone".to_owned(), false);
                    }
                }
                Ok(Some(TranscodeOutput {
                    output: Some(Output::Opus(batch)),
                })) => match wire::opus_from_wire(batch) {
                    Ok(packets) => {
                        if let Some((webrtc, path)) = &opus_out {
                            webrtc.audio(path, packets);
                        }
                    }
                    Err(e) => {
                        let status = format!("transcoder worker {} sent bad Opus: {e}", worker.id);
                        return (status, false);
                    }
                },
                Ok(Some(TranscodeOutput {
                    output: Some(Output::Exited(status)),
                })) => {
                    return (
                        format!("FFmpeg on transcoder worker {}: {status}", worker.id),
                        false,
                    );
                }
                Ok(Some(_)) => {}
                // The stream ended without FFmpeg's exit: the worker went away.
                Ok(None) => {
                    cluster.worker_failed(&worker.url);
                    return (
                        format!("transcoder worker {} ended the encode", worker.id),
                        true,
                    );
                }
                Err(status) => {
                    cluster.worker_failed(&worker.url);
                    return (
                        format!("transcoder worker {} lost: {}", worker.id, status.message()),
                        true,
                    );
                }
            }
        }
    };
    tokio::select! {
        status = read => status,
        _ = killed => ("killed".to_owned(), false),
    }
}
