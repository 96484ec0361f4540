//! Progress for people and for logs: a bar on a terminal, a plain line every 10 s otherwise
//! (runbooks, CI logs, `ssh` without `-t`), or one JSON object per line for machines. Always on
//! stderr, so stdout stays the command's answer.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use atrest::etcd::scan::Progress;

/// How progress is shown (`--progress`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// A bar (on stderr).
    Bar,
    /// A plain line every 10 s.
    Lines,
    /// One JSON object per line every 10 s: {"phase","scanned","to_scan","targeted","done","per_second","eta_seconds"}.
    Json,
    /// Nothing.
    None,
}

/// How often plain and JSON lines are written, and how long a run may be quiet at first.
const LINE_EVERY: Duration = Duration::from_secs(10);
const FIRST_LINE_AFTER: Duration = Duration::from_secs(2);

enum Sink {
    Bar(indicatif::ProgressBar),
    Lines { json: bool, next: Instant },
    None,
}

/// Counts what a scan read and what a rewrite finished, and shows it.
pub struct Bar {
    phase: &'static str,
    sink: Sink,
    started: Instant,
    scanned: u64,
    to_scan: u64,
    targeted: u64,
    done: u64,
    rewriting: bool,
    /// When the first rewrite was reported: rewrite rates are measured from here, not from the
    /// start of a `rotate run` that first waited for the apiservers.
    rewrites_since: Option<Instant>,
}

impl Bar {
    /// Progress of `phase` (`scanning`, `re-encrypting`) shown as `mode` says.
    pub fn new(phase: &'static str, mode: ProgressMode) -> Self {
        let tty = std::io::stderr().is_terminal();
        let now = Instant::now();
        let sink = match mode {
            ProgressMode::Auto if tty => Sink::Bar(bar(phase)),
            ProgressMode::Bar => Sink::Bar(bar(phase)),
            ProgressMode::Auto | ProgressMode::Lines => Sink::Lines {
                json: false,
                next: now + FIRST_LINE_AFTER,
            },
            ProgressMode::Json => Sink::Lines {
                json: true,
                next: now + FIRST_LINE_AFTER,
            },
            ProgressMode::None => Sink::None,
        };
        Bar {
            phase,
            sink,
            started: now,
            scanned: 0,
            to_scan: 0,
            targeted: 0,
            done: 0,
            rewriting: false,
            rewrites_since: None,
        }
    }

    /// Removes the bar; in line modes, says where the run ended (always after rewrites, and
    /// after a scan long enough to have shown progress).
    pub fn finish(&mut self) {
        match &mut self.sink {
            Sink::Bar(pb) => pb.finish_and_clear(),
            Sink::Lines { next, .. } => {
                if self.rewriting || self.started.elapsed() >= FIRST_LINE_AFTER {
                    *next = Instant::now();
                    self.show();
                }
            }
            Sink::None => {}
        }
    }

    /// Whole objects per second of what this run counts (rewrites, else keys scanned).
    fn rate(&self) -> u64 {
        let since = match (self.rewriting, self.rewrites_since) {
            (true, Some(t)) => t,
            _ => self.started,
        };
        let secs = since.elapsed().as_secs_f64();
        let n = if self.rewriting {
            self.done
        } else {
            self.scanned
        };
        if secs < 0.5 {
            0
        } else {
            (n as f64 / secs).round() as u64
        }
    }

    /// Seconds left at the current rate, when it can be told.
    fn eta(&self) -> Option<u64> {
        let rate = self.rate();
        let left = if self.rewriting {
            self.targeted.saturating_sub(self.done)
        } else {
            self.to_scan.saturating_sub(self.scanned)
        };
        (rate > 0).then(|| left.div_ceil(rate))
    }

    fn show(&mut self) {
        let (rate, eta) = (self.rate(), self.eta());
        let eta_text = eta.map(|s| format!("{s} s")).unwrap_or_else(|| "-".into());
        match &mut self.sink {
            Sink::Bar(pb) => {
                if self.rewriting {
                    pb.set_length(self.targeted);
                    pb.set_position(self.done);
                    pb.set_message(format!(
                        "{} ({}/{} scanned) {rate}/s eta {eta_text}",
                        self.phase, self.scanned, self.to_scan
                    ));
                } else {
                    pb.set_length(self.to_scan);
                    pb.set_position(self.scanned);
                    pb.set_message(format!("{} {rate}/s eta {eta_text}", self.phase));
                }
            }
            Sink::Lines { json, next } => {
                let now = Instant::now();
                if now < *next {
                    return;
                }
                *next = now + LINE_EVERY;
                let line = if *json {
                    serde_json::json!({
                        "phase": self.phase,
                        "scanned": self.scanned,
                        "to_scan": self.to_scan,
                        "targeted": self.targeted,
                        "done": self.done,
                        "per_second": rate,
                        "eta_seconds": eta,
                    })
                    .to_string()
                } else if self.rewriting {
                    format!(
                        "atrest: {}: {}/{} done ({}/{} scanned), {rate} objects/s, eta {eta_text}",
                        self.phase, self.done, self.targeted, self.scanned, self.to_scan
                    )
                } else {
                    format!(
                        "atrest: {}: {}/{} keys, {rate}/s, eta {eta_text}",
                        self.phase, self.scanned, self.to_scan
                    )
                };
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            Sink::None => {}
        }
    }
}

fn bar(phase: &'static str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(0);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_message(phase);
    pb
}

impl Progress for Bar {
    fn total(&mut self, n: u64) {
        self.to_scan = n;
        self.show();
    }
    fn advance(&mut self, n: u64) {
        self.scanned += n;
        self.show();
    }
    fn rewrites(&mut self, targeted: u64, done: u64) {
        self.rewriting = true;
        self.rewrites_since.get_or_insert_with(Instant::now);
        self.targeted = targeted;
        self.done = done;
        self.show();
    }
}
