//! CPU time of a process tree, from /proc.

/// utime + stime of `pid` and every live descendant, plus what their children that
/// already exited used (cutime + cstime: a thumbnail's FFmpeg lives a fraction of a
/// second), in clock ticks.
pub fn tree_ticks(root: u32) -> u64 {
    let mut stats = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        let ppid: u32 = fields[1].parse().unwrap_or(0);
        let ticks: u64 = fields[11..15]
            .iter()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .sum();
        stats.push((pid, ppid, ticks));
    }
    let mut tree = vec![root];
    let mut total = 0;
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for &(pid, ppid, ticks) in &stats {
            if pid == parent {
                total += ticks;
            }
            if ppid == parent && !tree.contains(&pid) {
                tree.push(pid);
            }
        }
        i += 1;
    }
    total
}
