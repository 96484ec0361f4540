//! Progress for people and for logs: a bar on a terminal, a plain line every 10 s otherwise
//! (runbooks, CI logs, `ssh` without `-t`), or one JSON object per line for machines. Always on
//! stderr, so stdout stays the command's answer.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use atrest::etcd::scan::Progress;

/// How progress is shown (`--progress`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ProgressMode {
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
/// The rate (and the ETA) follow this much of the recent past.
const RATE_WINDOW: Duration = Duration::from_secs(15);
const FIRST_LINE_AFTER: Duration = Duration::from_secs(2);

enum Sink {
    Bar(indicatif::ProgressBar),
    Lines { json: bool, next: Instant },
    None,
}

/// Counts what a scan read and what a rewrite finished, and shows it.
pub(crate) struct Bar {
    phase: &'static str,
    sink: Sink,
    started: Instant,
    scanned: u64,
    to_scan: u64,
    targeted: u64,
    done: u64,
    rewriting: bool,
    /// When a stalled peer was last reported.
    stall_said: Option<Instant>,
    /// The StorageVersionMigration phase last reported, and when.
    migration_said: Option<(String, Instant)>,
    /// Recent (time, count) samples of what the rate is measured on: the rate, and so the ETA,
    /// follow the last seconds, not the whole run.
    window: std::collections::VecDeque<(Instant, u64)>,
}

impl Bar {
    /// Progress of `phase` (`scanning`, `re-encrypting`) shown as `mode` says.
    pub(crate) fn new(phase: &'static str, mode: ProgressMode) -> Self {
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
            stall_said: None,
            migration_said: None,
            window: std::collections::VecDeque::new(),
        }
    }

    /// Removes the bar; in line modes, says where the run ended (always after rewrites, and
    /// after a scan long enough to have shown progress).
    pub(crate) fn finish(&mut self) {
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

    /// What the rate is measured on: rewrites finished, else keys scanned.
    fn counted(&self) -> u64 {
        if self.rewriting {
            self.done
        } else {
            self.scanned
        }
    }

    /// Records a sample of the count, keeping the last [`RATE_WINDOW`] of them.
    fn sample(&mut self) {
        let now = Instant::now();
        let n = self.counted();
        self.window.push_back((now, n));
        while self
            .window
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.window.pop_front();
        }
    }

    /// Whole objects per second over the last seconds (rewrites, else keys scanned).
    fn rate(&self) -> u64 {
        let (Some((t0, n0)), Some((t1, n1))) = (self.window.front(), self.window.back()) else {
            return 0;
        };
        let secs = t1.duration_since(*t0).as_secs_f64();
        if secs < 0.5 {
            0
        } else {
            (n1.saturating_sub(*n0) as f64 / secs).round() as u64
        }
    }

    /// Seconds left at the current rate, when it can be told. While the scan is still finding
    /// objects to rewrite, their number is extrapolated from the part scanned so far.
    fn eta(&self) -> Option<u64> {
        let rate = self.rate();
        let left = if self.rewriting {
            let expected = if self.scanned > 0 && self.scanned < self.to_scan {
                (self.targeted as f64 * self.to_scan as f64 / self.scanned as f64).ceil() as u64
            } else {
                self.targeted
            };
            expected.saturating_sub(self.done)
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

/// How often a stalled peer is reported again.
const STALL_EVERY: Duration = Duration::from_secs(10);

impl Bar {
    /// One event beside the progress: `line` above the bar or as a line, `json` with
    /// `--progress json`.
    fn event(&mut self, line: String, json: serde_json::Value) {
        match &mut self.sink {
            Sink::Bar(pb) => pb.println(line),
            Sink::Lines { json: true, .. } => {
                let _ = writeln!(std::io::stderr(), "{json}");
            }
            Sink::Lines { json: false, .. } => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            Sink::None => {}
        }
    }
}

impl Progress for Bar {
    fn stalled(&mut self, peer: &str, silent: Duration, patience: Duration) {
        if self.stall_said.is_some_and(|t| t.elapsed() < STALL_EVERY) {
            return;
        }
        self.stall_said = Some(Instant::now());
        let line = format!(
            "atrest: {peer} has not answered for {} s; stopping at {} s (its patience), with progress saved",
            silent.as_secs(),
            patience.as_secs()
        );
        let json = serde_json::json!({
            "phase": self.phase,
            "stalled": peer,
            "silent_seconds": silent.as_secs(),
            "patience_seconds": patience.as_secs(),
        });
        self.event(line, json);
    }
    fn migrating(&mut self, name: &str, phase: &str, elapsed: Duration) {
        let said = format!("{name} {phase}");
        if self
            .migration_said
            .as_ref()
            .is_some_and(|(s, t)| *s == said && t.elapsed() < STALL_EVERY)
        {
            return;
        }
        self.migration_said = Some((said, Instant::now()));
        let line = format!(
            "atrest: StorageVersionMigration {name}: {phase} ({} s)",
            elapsed.as_secs()
        );
        let json = serde_json::json!({
            "phase": self.phase,
            "migration": name,
            "state": phase,
            "seconds": elapsed.as_secs(),
        });
        self.event(line, json);
    }
    fn total(&mut self, n: u64) {
        self.to_scan = n;
        self.sample();
        self.show();
    }
    fn advance(&mut self, n: u64) {
        self.scanned += n;
        self.sample();
        self.show();
    }
    fn rewrites(&mut self, targeted: u64, done: u64) {
        if !self.rewriting {
            // The rate of rewrites starts now, not from the keys scanned before.
            self.window.clear();
        }
        self.rewriting = true;
        self.targeted = targeted;
        self.done = done;
        self.sample();
        self.show();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_extrapolates_the_rewrites_still_to_be_found() {
        let mut b = Bar::new("re-encrypting", ProgressMode::None);
        b.total(42_852);
        b.advance(1_600);
        // 2,915 rewrites found in the first 1,600 keys: about 78,000 in all, not 16 left.
        b.rewrites(1_600, 1_500);
        b.window.clear();
        let now = Instant::now();
        b.window.push_back((now - Duration::from_secs(10), 500));
        b.window.push_back((now, 1_500));
        assert_eq!(b.rate(), 100);
        let eta = b.eta().unwrap();
        assert!(
            eta > 400,
            "{eta} s: the remaining keys hold about 41,000 more"
        );
        // The scan is done: what is left is what was found.
        b.advance(41_252);
        b.window.clear();
        b.window.push_back((now - Duration::from_secs(10), 500));
        b.window.push_back((now, 1_500));
        assert_eq!(b.eta(), Some(1));
    }
}
