//! One run of a command, the same for every command.
//!
//! [`Run::start`] starts the clock; [`Run::keep`] takes the state's lock and opens the state as
//! the command's `--state`/`--no-state` say ([`Keep`]); the command plans and executes between
//! them, reading the state through [`Run::state`] and recording digest history through
//! [`Run::record_plan`]; [`Run::finish`] then records the run in the state, writes the JSON
//! report (`--report`) and the metrics (`--metrics`), prints the summary and returns the exit
//! status the report implies ([`exit_status`]). Commands with no report end with
//! [`Run::exit`]. So `--report`, `--metrics` and `--state` mean the same on every command that
//! takes them, and no command chooses its own exit status.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{Map, Value};

use crate::lock::RunLock;
use crate::metrics::{RefreshFigures, RunMetrics};
use crate::plan::Plan;
pub use crate::report::Summary;
use crate::report::{Header, ImageReport, RunReport, EXIT_INCOMPLETE};
use crate::state::{self, State};

/// Which state a command keeps, from its flags.
#[derive(Debug, Clone)]
pub enum Keep {
    /// None: `--no-state`, or a command that records nothing.
    Nothing,
    /// `--state FILE` (`None`: the default state). It must be locked and opened, else the run
    /// stops before doing anything.
    State(Option<PathBuf>),
    /// The default state, for records that are a convenience (what copy and import shipped,
    /// when neither `--site` nor `--state` was given): when it cannot be locked or opened, a
    /// warning says so and the run goes on without it — the content is at the destination.
    DefaultIfUsable,
}

impl Keep {
    /// `--state FILE` / `--no-state`.
    pub fn from_flags(state: Option<&Path>, no_state: bool) -> Keep {
        if no_state {
            Keep::Nothing
        } else {
            Keep::State(state.map(Path::to_path_buf))
        }
    }
}

/// What a command hands to [`Run::finish`]: its report, and what it adds.
pub struct Finish {
    pub report: RunReport,
    pub summary: Summary,
    /// Printed right after the summary line (export: what the bundle holds).
    pub detail: Vec<String>,
    /// Top-level sections of the JSON report beside the run's own (refresh: `refresh`).
    pub sections: Map<String, Value>,
    /// Figures the run's record in the state adds to the summary (refresh: `changed`).
    pub recorded: Map<String, Value>,
    /// Registries whose rate budget ran out (metrics' `prewarm_budget_spent`).
    pub budgets_spent: Vec<String>,
    /// What a refresh adds to the metrics.
    pub refresh: Option<RefreshFigures>,
    /// A dry run records nothing and writes no metrics.
    pub dry_run: bool,
    /// Printed last (refresh: what a spent budget left for the next run).
    pub after: Vec<String>,
}

impl Finish {
    pub fn new(report: RunReport, summary: Summary) -> Finish {
        Finish {
            report,
            summary,
            detail: Vec::new(),
            sections: Map::new(),
            recorded: Map::new(),
            budgets_spent: Vec::new(),
            refresh: None,
            dry_run: false,
            after: Vec::new(),
        }
    }
}

/// The exit status of a run whose report says `incomplete` (an image failed or is missing):
/// 0 or [`EXIT_INCOMPLETE`]. Bad input is 2, from `main`, for any error a command returns.
pub fn exit_status(incomplete: bool) -> i32 {
    if incomplete {
        EXIT_INCOMPLETE
    } else {
        0
    }
}

/// One command's run: its clock, its lock and state, where its report and metrics go.
pub struct Run {
    command: &'static str,
    started: Instant,
    started_at: i64,
    // Dropped after `state`: the lock is held until the state is closed.
    state: Option<State>,
    _lock: Option<RunLock>,
    report: Option<PathBuf>,
    metrics: Option<PathBuf>,
}

impl Run {
    /// Start the clock of `command`; no state yet (see [`Run::keep`]).
    pub fn start(command: &'static str) -> Run {
        Run {
            command,
            started: Instant::now(),
            started_at: state::now(),
            state: None,
            _lock: None,
            report: None,
            metrics: None,
        }
    }

    /// Take the lock of the state `keep` names (one run per state at a time; held until the
    /// run is dropped) and open it.
    pub fn keep(mut self, keep: Keep) -> Result<Run> {
        let (path, required) = match keep {
            Keep::Nothing => return Ok(self),
            Keep::State(path) => (path.unwrap_or_else(State::default_path), true),
            Keep::DefaultIfUsable => (State::default_path(), false),
        };
        let opened = crate::lock::acquire(&path, self.command)
            .and_then(|lock| Ok((lock, State::open(&path)?)));
        match opened {
            Ok((lock, state)) => {
                self._lock = Some(lock);
                self.state = Some(state);
            }
            Err(e) if !required => {
                eprintln!(
                    "warning: {}: the state cannot be used, so what this run ships is not recorded: {e:#}",
                    self.command
                );
            }
            Err(e) => return Err(e),
        }
        Ok(self)
    }

    /// `--report FILE`.
    pub fn report_to(mut self, path: Option<&Path>) -> Run {
        self.report = path.map(Path::to_path_buf);
        self
    }

    /// `--metrics FILE`.
    pub fn metrics_to(mut self, path: Option<&Path>) -> Run {
        self.metrics = path.map(Path::to_path_buf);
        self
    }

    pub fn command(&self) -> &'static str {
        self.command
    }

    /// The state the run keeps, if any.
    pub fn state(&self) -> Option<&State> {
        self.state.as_ref()
    }

    /// The `--report` path, if any (cluster resources go beside it).
    pub fn report_path(&self) -> Option<&Path> {
        self.report.as_deref()
    }

    /// Record what each planned reference resolved to (and, given the outcomes, which images
    /// are warm) in the state's history; nothing without a state.
    pub fn record_plan(&self, plan: &Plan, images: Option<&[ImageReport]>) -> Result<()> {
        match &self.state {
            Some(state) => crate::history::record_plan(state, plan, images),
            None => Ok(()),
        }
    }

    /// The head of this run's report: `job` is what it read (a job file, a bundle), `target`
    /// where it went (the cache, a registry, a bundle directory).
    pub fn header(&self, job: String, target: Option<String>) -> Header {
        Header {
            command: self.command.to_string(),
            job,
            cache: target,
            started_at: self.started_at,
            duration_seconds: self.started.elapsed().as_secs_f64(),
        }
    }

    /// Record the run, write the report and the metrics, print the summary: the exit status.
    pub fn finish(self, f: Finish) -> Result<i32> {
        let incomplete = f.report.failed().next().is_some();
        if let (Some(state), false) = (&self.state, f.dry_run) {
            let mut summary = serde_json::to_value(&f.report.summary)?;
            if let Value::Object(fields) = &mut summary {
                fields.extend(f.recorded);
            }
            if let Err(e) = state.record_run(self.command, self.started_at, &summary) {
                tracing::warn!("cannot record the run in the state: {e:#}");
            }
        }
        if let Some(path) = &self.report {
            let mut json = serde_json::to_value(&f.report)?;
            if let Value::Object(fields) = &mut json {
                fields.extend(f.sections);
            }
            crate::fsutil::write_atomically(path, &serde_json::to_vec_pretty(&json)?)
                .context("--report")?;
        }
        if let Some(path) = &self.metrics {
            if f.dry_run {
                eprintln!(
                    "note: --dry-run writes no metrics (they would describe a run that did nothing)"
                );
            } else {
                let last_success = match &self.state {
                    Some(s) => s.last_success(self.command)?,
                    None => (!incomplete).then(state::now),
                };
                crate::metrics::write(
                    path,
                    &RunMetrics {
                        report: &f.report,
                        last_success,
                        finished_at: state::now(),
                        budgets_spent: f.budgets_spent,
                        refresh: f.refresh,
                    },
                )
                .context("--metrics")?;
            }
        }
        let out = &mut std::io::stderr();
        f.report.print_summary(out, f.summary, &f.detail)?;
        for line in &f.after {
            eprintln!("{line}");
        }
        Ok(exit_status(incomplete))
    }

    /// End a run that writes no report (plan, inventory, prune, bundle verify, quay,
    /// mirror-config): its exit status.
    pub fn exit(self, incomplete: bool) -> i32 {
        exit_status(incomplete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ImageStatus, RunReport};

    fn image(status: ImageStatus) -> ImageReport {
        ImageReport {
            reference: format!("example.com/a:{status:?}"),
            digest: None,
            status,
            bytes: 0,
            origin: "test".into(),
            error: (status == ImageStatus::Failed).then(|| "it broke".to_string()),
            warnings: Vec::new(),
            missing: Vec::new(),
            budget_spent: None,
        }
    }

    fn report(run: &Run, statuses: &[ImageStatus]) -> RunReport {
        RunReport::new(
            run.header("job.yaml".into(), Some("cache.example".into())),
            &Plan::default().summary(),
            &crate::registry::Stats::default(),
            statuses.iter().map(|s| image(*s)).collect(),
        )
    }

    #[test]
    fn exit_status_follows_the_report() {
        use ImageStatus::*;
        for (statuses, want) in [
            (vec![], 0),
            (vec![Warmed, Cached, Present, Copied, Exported], 0),
            (vec![Copied, Failed], EXIT_INCOMPLETE),
            (vec![Present, Missing], EXIT_INCOMPLETE),
        ] {
            let run = Run::start("verify");
            let r = report(&run, &statuses);
            assert_eq!(
                run.finish(Finish::new(r, Summary::Cache)).unwrap(),
                want,
                "{statuses:?}"
            );
        }
        assert_eq!(Run::start("plan").exit(true), EXIT_INCOMPLETE);
        assert_eq!(Run::start("plan").exit(false), 0);
    }

    #[test]
    fn finish_writes_report_metrics_and_the_run_record() {
        let dir = std::env::temp_dir().join(format!("prewarm-run-{}", std::process::id()));
        let state = dir.join("state.db");
        let (report_path, metrics_path) = (dir.join("r.json"), dir.join("m.prom"));
        let run = Run::start("copy")
            .keep(Keep::State(Some(state.clone())))
            .unwrap()
            .report_to(Some(&report_path))
            .metrics_to(Some(&metrics_path));
        // The lock is held while the run lives.
        let second = Run::start("warm").keep(Keep::State(Some(state.clone())));
        assert!(second.is_err());
        let mut f = Finish::new(
            report(&run, &[ImageStatus::Copied, ImageStatus::Failed]),
            Summary::Pushed,
        );
        f.sections.insert("extra".into(), Value::from(7));
        f.recorded.insert("changed".into(), Value::from(3));
        assert_eq!(run.finish(f).unwrap(), EXIT_INCOMPLETE);

        let json: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
        assert_eq!(json["command"], "copy");
        assert_eq!(json["summary"]["copied"], 1);
        assert_eq!(json["summary"]["failed"], 1);
        assert_eq!(json["extra"], 7);
        assert_eq!(json["images"][1]["error"], "it broke");
        let metrics = std::fs::read_to_string(&metrics_path).unwrap();
        assert!(
            metrics.contains("prewarm_failures{command=\"copy\"} 1"),
            "{metrics}"
        );
        // Failed: no success recorded; the lock is released with the run; a run with no
        // failed image is the last success.
        let again = Run::start("copy")
            .keep(Keep::State(Some(state.clone())))
            .unwrap();
        assert_eq!(again.state().unwrap().last_success("copy").unwrap(), None);
        let ok = report(&again, &[ImageStatus::Copied]);
        assert_eq!(again.finish(Finish::new(ok, Summary::Pushed)).unwrap(), 0);
        let last = Run::start("copy").keep(Keep::State(Some(state))).unwrap();
        assert!(last
            .state()
            .unwrap()
            .last_success("copy")
            .unwrap()
            .is_some());
        drop(last);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
