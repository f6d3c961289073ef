//! SIGINT and SIGTERM as a future, so an export can stop cleanly: its writer thread is
//! joined and its temp segments removed before the process exits, instead of the default
//! action killing it with files half written.

use anyhow::Result;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Listens for SIGINT and SIGTERM from creation on (the default action is replaced for the
/// rest of the process: create it only where the run handles the signal).
pub struct Interrupt {
    int: Signal,
    term: Signal,
}

impl Interrupt {
    pub fn listen() -> Result<Interrupt> {
        Ok(Interrupt {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves with the signal's name when one arrives.
    pub async fn received(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}
