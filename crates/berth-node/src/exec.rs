//! Running a command inside a container and collecting its output: exec probes and preStop
//! hooks (interactive exec is the streaming server's).

use std::sync::Arc;
use std::time::Duration;

use berth_runtime::{ExecRequest, Runtime};
use futures::future::BoxFuture;
use tokio::io::AsyncReadExt;

use crate::probe::{ExecOutput, ExecProbeError, ExecProber};

/// How much output an exec probe keeps (kubelet keeps 10 KiB).
const MAX_OUTPUT: u64 = 10 * 1024;

/// Runs `argv` in container `id`; returns its exit code and its stdout and stderr together.
pub async fn run(runtime: &Runtime, id: &str, argv: Vec<String>) -> Result<(i32, Vec<u8>), String> {
    let request = ExecRequest {
        argv,
        ..Default::default()
    };
    let mut process = runtime.exec(id, request).await.map_err(|e| e.to_string())?;
    let mut output = Vec::new();
    let stdout = process.stdout.take();
    let stderr = process.stderr.take();
    let read_out = async {
        let mut buf = Vec::new();
        if let Some(s) = stdout {
            let _ = s.take(MAX_OUTPUT).read_to_end(&mut buf).await;
        }
        buf
    };
    let read_err = async {
        let mut buf = Vec::new();
        if let Some(s) = stderr {
            let _ = s.take(MAX_OUTPUT).read_to_end(&mut buf).await;
        }
        buf
    };
    let (out, err) = futures::join!(read_out, read_err);
    output.extend(out);
    output.extend(err);
    let code = process.wait().await.map_err(|e| e.to_string())?;
    Ok((code, output))
}

/// Exec probes of one container, through the runtime.
pub struct RuntimeProber {
    pub runtime: Arc<Runtime>,
    pub id: String,
}

impl ExecProber for RuntimeProber {
    fn exec<'a>(
        &'a self,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecOutput, ExecProbeError>> {
        Box::pin(async move {
            match tokio::time::timeout(timeout, run(&self.runtime, &self.id, argv.to_vec())).await {
                Err(_) => Err(ExecProbeError::TimedOut),
                Ok(Err(message)) => Err(ExecProbeError::Failed(message)),
                Ok(Ok((exit_code, output))) => Ok(ExecOutput { exit_code, output }),
            }
        })
    }
}
