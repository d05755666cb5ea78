//! The agent's side of the privileged executor (protocol.md 4.7): one
//! connection per run, one framed request, the framed response read to end
//! of stream. Closing the connection early (a cancelled run, a deadline, an
//! agent that dies) makes the executor kill the script.

use std::path::Path;
use std::time::Duration;

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::unix::UnixStream;

use crate::agent::limits::{EXECUTOR_CONNECT_TIMEOUT, EXECUTOR_RESPONSE_SLACK_BYTES};
use crate::proto::frame::{ExecRequest, ExecResponse};
use crate::rt;

/// Sends `request` to the executor at `socket` and waits up to `wait` for
/// the answer, which may hold up to `max_output` bytes per stream. `Err` is
/// the per-run error text (`executor unreachable: ...` and so on).
pub async fn exchange(
    socket: &Path,
    request: &ExecRequest,
    wait: Duration,
    max_output: usize,
) -> Result<ExecResponse, String> {
    let mut stream = rt::timeout(Some(EXECUTOR_CONNECT_TIMEOUT), UnixStream::connect(socket))
        .await
        .map_err(|_| "executor unreachable: connection timed out".to_string())?
        .map_err(|e| format!("executor unreachable: {e}"))?;
    let limit = 2 * max_output + EXECUTOR_RESPONSE_SLACK_BYTES;
    let talk = async {
        stream
            .write_all(&request.encode())
            .await
            .map_err(|e| format!("executor write failed: {e}"))?;
        let mut bytes = Vec::new();
        (&mut stream)
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| format!("executor read failed: {e}"))?;
        Ok::<_, String>(bytes)
    };
    let bytes = rt::timeout(Some(wait), talk)
        .await
        .map_err(|_| format!("executor did not answer within {}s", wait.as_secs()))??;
    if bytes.is_empty() {
        return Err("executor closed before responding".into());
    }
    if bytes.len() > limit {
        return Err(format!("executor response over {limit} bytes"));
    }
    ExecResponse::decode(&bytes).map_err(|_| "truncated executor response".to_string())
}
