//! Timing of a measured section: wall time, this process's CPU time, and the CPU time the rest
//! of the machine used meanwhile (on a shared machine, a row measured while something else ran
//! says so).

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Linux reports CPU times in clock ticks of `USER_HZ`, 100 on every mainstream build.
const TICKS_PER_SEC: f64 = 100.0;

/// What a [`Clock`] measured.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Timing {
    /// Wall time, seconds.
    pub secs: f64,
    /// CPU time (user + system, all threads) of this process, seconds.
    pub cpu_secs: f64,
    /// CPU time of everything else on the machine meanwhile, seconds (`None` without /proc).
    pub other_cpu_secs: Option<f64>,
}

impl Timing {
    /// Cores this process kept busy on average.
    pub fn cores(&self) -> f64 {
        self.cpu_secs / self.secs.max(1e-9)
    }
    /// Cores the rest of the machine kept busy on average.
    pub fn other_cores(&self) -> f64 {
        self.other_cpu_secs.unwrap_or(0.0) / self.secs.max(1e-9)
    }
}

pub struct Clock {
    wall: Instant,
    cpu: f64,
    machine: Option<f64>,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            machine: machine_busy_secs(),
            cpu: process_cpu_secs().unwrap_or(0.0),
            wall: Instant::now(),
        }
    }

    pub fn stop(&self) -> Timing {
        let secs = self.wall.elapsed().as_secs_f64();
        let cpu_secs = (process_cpu_secs().unwrap_or(0.0) - self.cpu).max(0.0);
        let other_cpu_secs = match (self.machine, machine_busy_secs()) {
            (Some(a), Some(b)) => Some((b - a - cpu_secs).max(0.0)),
            _ => None,
        };
        Timing {
            secs,
            cpu_secs,
            other_cpu_secs,
        }
    }
}

/// utime + stime of this process (all threads, live and exited), from `/proc/self/stat`.
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12th and 13th after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// Busy CPU time of the whole machine since boot, from the `cpu` line of `/proc/stat`.
fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
    let busy: f64 = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    Some(busy / TICKS_PER_SEC)
}

/// Waits until the machine has been idle (less than 0.15 cores busy) for `quiet` in a row, at
/// most `max`. Returns whether it got there.
pub fn wait_idle(quiet: std::time::Duration, max: std::time::Duration) -> bool {
    let step = std::time::Duration::from_millis(500);
    let start = Instant::now();
    let mut idle_since = Instant::now();
    let mut last = machine_busy_secs();
    while start.elapsed() < max {
        std::thread::sleep(step);
        let now = machine_busy_secs();
        let busy = match (last, now) {
            (Some(a), Some(b)) => (b - a) / step.as_secs_f64(),
            _ => return false,
        };
        last = now;
        if busy > 0.15 {
            idle_since = Instant::now();
        } else if idle_since.elapsed() >= quiet {
            return true;
        }
    }
    false
}
