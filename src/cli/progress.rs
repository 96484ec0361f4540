//! Progress on a terminal: a bar on stderr when it is a TTY, nothing otherwise.

use std::io::IsTerminal;

use atrest::etcd::scan::Progress;

/// A progress bar on a terminal, nothing otherwise.
pub struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    /// A bar labelled `message`, shown only when stderr is a terminal.
    pub fn new(message: &'static str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let pb = indicatif::ProgressBar::new(0);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bar:30} {pos}/{len} {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_message(message);
        Bar(Some(pb))
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn total(&mut self, n: u64) {
        if let Some(pb) = &self.0 {
            pb.set_length(n);
        }
    }
    fn advance(&mut self, n: u64) {
        if let Some(pb) = &self.0 {
            pb.inc(n);
        }
    }
}
