//! The machine's CPU time (`/proc/stat`), for the benches: how busy the machine was over a
//! stretch, and how much of it the hypervisor gave to others ("steal"), which no set-up can
//! be blamed for and which makes a run worth less.

/// Cumulative CPU times of all CPUs, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    total: u64,
    idle: u64,
    steal: u64,
}

impl CpuTimes {
    /// Now, or `None` where `/proc/stat` cannot be read.
    pub fn now() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal guest guest_nice; guest time is
        // counted in user already.
        let field = |i: usize| fields.get(i).copied().unwrap_or(0);
        Some(CpuTimes {
            total: (0..8).map(field).sum(),
            idle: field(3) + field(4),
            steal: field(7),
        })
    }

    fn ticks_since(&self, earlier: &CpuTimes) -> f64 {
        self.total.saturating_sub(earlier.total).max(1) as f64
    }

    /// The busy share of all CPUs between `earlier` and `self` (0 to 1).
    pub fn busy_since(&self, earlier: &CpuTimes) -> f64 {
        1.0 - self.idle.saturating_sub(earlier.idle) as f64 / self.ticks_since(earlier)
    }

    /// The share of all CPUs' time the hypervisor took between `earlier` and `self` (0 to 1).
    pub fn stolen_since(&self, earlier: &CpuTimes) -> f64 {
        self.steal.saturating_sub(earlier.steal) as f64 / self.ticks_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_between_zero_and_one() {
        let a = CpuTimes::now().expect("/proc/stat");
        let mut spin = 0u64;
        let until = std::time::Instant::now() + std::time::Duration::from_millis(50);
        while std::time::Instant::now() < until {
            spin = spin.wrapping_add(1);
        }
        let b = CpuTimes::now().unwrap();
        assert!(spin > 0);
        for share in [b.busy_since(&a), b.stolen_since(&a)] {
            assert!((0.0..=1.0).contains(&share), "{share}");
        }
        assert!(b.busy_since(&a) > 0.0, "this test kept a CPU busy");
    }
}
