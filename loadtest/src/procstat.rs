//! CPU time and memory of processes, read from /proc (Linux).

use std::time::Duration;

fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// Fields of /proc/PID/stat after the command name.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &text[text.rfind(')')? + 2..];
    // Field 3 (state) is a letter; map it to 0 to keep indices simple.
    Some(after_name.split_whitespace().map(|field| field.parse().unwrap_or(0)).collect())
}

/// (user + system) CPU of a process, and of its children it has already waited for.
fn cpu_ticks(pid: u32, with_reaped_children: bool) -> u64 {
    // After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    stat_fields(pid)
        .map(|fields| {
            let own = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
            let reaped = if with_reaped_children {
                fields.get(13).copied().unwrap_or(0) + fields.get(14).copied().unwrap_or(0)
            } else {
                0
            };
            own + reaped
        })
        .unwrap_or(0)
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_fields(pid).and_then(|fields| fields.get(1).copied()) == Some(u64::from(parent)))
        .collect()
}

/// CPU time of a process alone.
pub fn process_cpu(pid: u32) -> Duration {
    Duration::from_secs_f64(cpu_ticks(pid, false) as f64 / clock_ticks_per_second() as f64)
}

/// CPU time of a process tree one level deep (PostgreSQL's postmaster and its backends),
/// including backends that have exited since (their time is in the postmaster's cutime).
pub fn process_tree_cpu(pid: u32) -> Duration {
    let ticks = cpu_ticks(pid, true) + children_of(pid).into_iter().map(|child| cpu_ticks(child, false)).sum::<u64>();
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64)
}

/// Peak resident memory (VmHWM) in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}
