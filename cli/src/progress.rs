//! Progress: a bar (files, bytes, rate) on a terminal, plain lines when
//! stderr is not one (CI logs), nothing with `--quiet` or `--json`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Read};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bars,
    Lines,
    Quiet,
}

#[derive(Debug, Clone, Copy)]
pub struct Progress {
    mode: Mode,
}

impl Progress {
    /// Bars on a terminal, lines otherwise; `quiet`: nothing.
    pub fn new(quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        };
        Progress { mode }
    }

    #[cfg(test)]
    pub fn quiet() -> Progress {
        Progress { mode: Mode::Quiet }
    }

    /// A line of news (not with `--quiet`).
    pub fn line(&self, text: &str) {
        if self.mode != Mode::Quiet {
            eprintln!("{text}");
        }
    }

    /// A bar over `total` bytes.
    pub fn bytes(&self, what: &str, total: u64) -> Bar {
        let bar = match self.mode {
            Mode::Bars => {
                let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                b.set_style(
                    ProgressStyle::with_template("{msg:>14} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}")
                        .expect("a valid template")
                        .progress_chars("=> "),
                );
                b.set_message(what.to_string());
                b
            }
            _ => ProgressBar::hidden(),
        };
        Bar { bar, what: what.to_string(), total, started: Instant::now(), lines: self.mode == Mode::Lines }
    }
}

/// One operation's progress.
#[derive(Clone)]
pub struct Bar {
    bar: ProgressBar,
    what: String,
    total: u64,
    started: Instant,
    lines: bool,
}

impl Bar {
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Counts what is read through it.
    pub fn reader<R: Read>(&self, r: R) -> Counted<R> {
        Counted { inner: r, bar: self.clone() }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
        if self.lines {
            let secs = self.started.elapsed().as_secs_f64();
            let rate = if secs > 0.0 { self.total as f64 / secs / 1e6 } else { 0.0 };
            eprintln!("{}: {} in {secs:.2} s ({rate:.1} MB/s)", self.what, human_bytes(self.total));
        }
    }
}

pub struct Counted<R> {
    inner: R,
    bar: Bar,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_read_as_people_read_them() {
        assert_eq!(super::human_bytes(999), "999 B");
        assert_eq!(super::human_bytes(1_500), "1.5 kB");
        assert_eq!(super::human_bytes(2_300_000_000), "2.3 GB");
    }
}
