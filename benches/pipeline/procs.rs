//! What the processes of a step cost: peak resident memory, and CPU seconds of the bench,
//! the bridge or sink, SecantusDB and RabbitMQ, read from `/proc`.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;

/// Peak resident memory of a process so far (`VmHWM`), in MiB.
pub fn peak_rss_mb(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// Resident memory of a process now (`VmRSS`), in MiB.
#[allow(dead_code)] // used by benches/sink_state.rs, not by the pipeline bench
pub fn rss_mb(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status`, in MiB (NaN once the process is gone).
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn ticks_per_second() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User plus system CPU seconds a process (all its threads) has used.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces; utime and
    // stime are fields 14 and 15 of the line, so 12 and 13 here.
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / ticks_per_second())
}

/// The first process (lowest pid) whose command line satisfies `matches`.
fn find_process(matches: impl Fn(&[String]) -> bool) -> Option<u32> {
    let mut pids: Vec<u32> =
        std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    pids.sort_unstable();
    pids.into_iter().find(|pid| {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmd.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        matches(&args)
    })
}

/// The first process whose command line contains every one of `needles`.
pub fn find_pid(needles: &[&str]) -> Option<u32> {
    find_process(|args| needles.iter().all(|n| args.iter().any(|a| a.contains(n))))
}

/// The SecantusDB server listening on `port`.
pub fn secantus_pid(port: u16) -> Option<u32> {
    let port = port.to_string();
    find_process(|args| {
        args.iter().any(|a| a.contains("secantusd")) && args.windows(2).any(|w| w[0] == "--port" && w[1] == port)
    })
}

/// The RabbitMQ node (shared with whatever else uses the broker).
pub fn rabbitmq_pid() -> Option<u32> {
    find_pid(&["beam", "rabbit"])
}

/// Wall time and CPU seconds of a step, by process.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub wall_s: f64,
    /// "bench", "bridge", "sink", "secantusdb", "rabbitmq" -> CPU seconds during the step.
    pub cpu_s: BTreeMap<String, f64>,
}

/// CPU counters of long-lived processes at the start of a step.
pub struct Meter {
    start: Instant,
    before: Vec<(&'static str, u32, f64)>,
}

impl Meter {
    /// Start measuring the bench itself and the given long-lived processes.
    pub fn start(procs: &[(&'static str, Option<u32>)]) -> Self {
        let mut before = vec![("bench", std::process::id(), cpu_secs(std::process::id()).unwrap_or(f64::NAN))];
        for &(name, pid) in procs {
            if let Some(pid) = pid {
                before.push((name, pid, cpu_secs(pid).unwrap_or(f64::NAN)));
            }
        }
        Self { start: Instant::now(), before }
    }

    /// Stop: the deltas of the long-lived processes, plus the whole CPU time of processes that
    /// started during the step (`fresh`, read before they exit).
    pub fn stop(self, fresh: &[(&'static str, u32)]) -> Usage {
        let mut cpu_s = BTreeMap::new();
        for (name, pid, before) in self.before {
            cpu_s.insert(name.to_string(), cpu_secs(pid).unwrap_or(f64::NAN) - before);
        }
        for &(name, pid) in fresh {
            cpu_s.insert(name.to_string(), cpu_secs(pid).unwrap_or(f64::NAN));
        }
        Usage { wall_s: self.start.elapsed().as_secs_f64(), cpu_s }
    }
}
