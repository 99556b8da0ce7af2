//! The client side of exec: [`ExecProcess`], a command running in a container through the
//! `__exec` helper (see `exec_helper.rs`), with async handles to its input and output.
//!
//! Without a terminal, stdin, stdout and stderr are plain pipes to the command. With a terminal
//! the helper's stdin carries frames, so that input and window sizes share one pipe:
//! `[kind: u8][len: u32 big-endian][payload]`, kind 0 input bytes, 1 a window size (`cols: u16,
//! rows: u16` big-endian), 2 end of input.

use std::io;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::Mutex;

use crate::Error;

pub(crate) const FRAME_HEADER: usize = 5;
pub(crate) const FRAME_DATA: u8 = 0;
pub(crate) const FRAME_RESIZE: u8 = 1;
pub(crate) const FRAME_CLOSE: u8 = 2;

/// A command running inside a container.
#[derive(Debug)]
pub struct ExecProcess {
    pub(crate) child: Child,
    /// Input to the command (present when the request asked for stdin).
    pub stdin: Option<ExecStdin>,
    /// The command's stdout; with a terminal, everything the terminal shows.
    pub stdout: Option<ChildStdout>,
    /// The command's stderr; with a terminal, only the helper's own error messages.
    pub stderr: Option<ChildStderr>,
    /// The framed pipe, with a terminal (shared with `stdin`).
    pub(crate) control: Option<Arc<Mutex<ChildStdin>>>,
}

/// The writing end of a command's input.
#[derive(Debug)]
pub struct ExecStdin {
    inner: StdinInner,
}

#[derive(Debug)]
enum StdinInner {
    Raw(ChildStdin),
    Framed(Arc<Mutex<ChildStdin>>),
}

pub(crate) fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

impl ExecStdin {
    pub(crate) fn raw(stdin: ChildStdin) -> ExecStdin {
        ExecStdin {
            inner: StdinInner::Raw(stdin),
        }
    }

    pub(crate) fn framed(stdin: Arc<Mutex<ChildStdin>>) -> ExecStdin {
        ExecStdin {
            inner: StdinInner::Framed(stdin),
        }
    }

    /// Sends input to the command.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            StdinInner::Raw(stdin) => stdin.write_all(data).await,
            StdinInner::Framed(stdin) => {
                let mut stdin = stdin.lock().await;
                for chunk in data.chunks(32 * 1024) {
                    stdin.write_all(&frame(FRAME_DATA, chunk)).await?;
                }
                stdin.flush().await
            }
        }
    }

    /// Ends the command's input (EOF without a terminal).
    pub async fn close(self) -> io::Result<()> {
        match self.inner {
            StdinInner::Raw(mut stdin) => stdin.shutdown().await,
            StdinInner::Framed(stdin) => {
                stdin.lock().await.write_all(&frame(FRAME_CLOSE, &[])).await
            }
        }
    }
}

impl ExecProcess {
    /// Sets the terminal's window size; does nothing without a terminal.
    pub async fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        match self.resizer() {
            Some(resizer) => resizer.resize(cols, rows).await,
            None => Ok(()),
        }
    }

    /// A handle for resizing from another task (with a terminal).
    pub fn resizer(&self) -> Option<Resizer> {
        self.control.clone().map(|control| Resizer { control })
    }

    /// Waits for the command and returns its exit code (128 + signal if a signal killed it;
    /// 126/127 if it could not be started, with the reason on stderr).
    pub async fn wait(&mut self) -> Result<i32, Error> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| Error::io("waiting for the exec helper", e))?;
        // The helper is gone; release the framed pipe (resizes now do nothing).
        self.control = None;
        Ok(status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }))
    }

    /// Kills the helper (the command in the container is left to finish or be killed with its
    /// container).
    pub async fn kill(&mut self) -> Result<(), Error> {
        self.child
            .kill()
            .await
            .map_err(|e| Error::io("killing the exec helper", e))
    }
}

/// Resizes an exec's terminal; clone it into the task that receives resize events.
#[derive(Debug, Clone)]
pub struct Resizer {
    control: Arc<Mutex<ChildStdin>>,
}

impl Resizer {
    /// Sets the terminal's window size.
    pub async fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        let mut payload = [0u8; 4];
        payload[..2].copy_from_slice(&cols.to_be_bytes());
        payload[2..].copy_from_slice(&rows.to_be_bytes());
        let mut stdin = self.control.lock().await;
        stdin.write_all(&frame(FRAME_RESIZE, &payload)).await?;
        stdin.flush().await
    }
}
