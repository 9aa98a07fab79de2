//! A daemon on its own thread and runtime inside another program, for benchmarks that
//! measure it over its real Unix socket (`shim-bench`): started on a config, stopped (with
//! its final checkpoint) on [`Background::stop`] or when dropped.
//!
//! The daemon gets its own runtime ([`ledgerd::runtime_builder`]), as in its own process, so the
//! program measuring it cannot starve it by blocking its own threads.

use std::thread::JoinHandle;
use std::time::Duration;

use ledgerd::{Config, Ready};

/// How long [`Background::start`] waits for the daemon to serve.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running daemon (see the module docs).
pub struct Background {
    /// What the daemon announced once its socket accepted connections.
    pub ready: Ready,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Background {
    /// Starts a daemon on `config` and waits until it serves (at most [`START_TIMEOUT`]).
    pub fn start(config: Config) -> anyhow::Result<Background> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("ledgerd".into()).spawn(move || {
            // Named, so that a benchmark can tell the daemon's threads from its own.
            let rt = ledgerd::runtime_builder().thread_name("ledgerd-rt").build()?;
            rt.block_on(ledgerd::run(
                config,
                async {
                    let _ = stop_rx.await;
                },
                move |ready| {
                    let _ = ready_tx.send(ready.clone());
                },
            ))
        })?;
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(ready) => Ok(Background { ready, stop: Some(stop_tx), thread: Some(thread) }),
            // The daemon gave up (its error says why) or is stuck.
            Err(_) => {
                let _ = stop_tx.send(());
                if !thread.is_finished() {
                    anyhow::bail!(
                        "ledgerd did not start within {}s; check the data dir and the socket path",
                        START_TIMEOUT.as_secs()
                    );
                }
                match thread.join() {
                    Ok(Err(e)) => Err(e.context("ledgerd did not start")),
                    Ok(Ok(())) => anyhow::bail!("ledgerd stopped before it served"),
                    Err(_) => anyhow::bail!("the ledgerd thread panicked while starting"),
                }
            }
        }
    }

    /// Stops the daemon and waits for it; its error, if it failed.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.join()
    }

    fn join(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| anyhow::anyhow!("the ledgerd thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Err(e) = self.join() {
            eprintln!("ledgerd (in process) stopped with an error: {e:#}");
        }
    }
}
