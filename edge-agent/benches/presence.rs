//! Presence against ground truth (`tastesync_edge::evaluate`): a day of a busy café per seed,
//! on default settings, the figures the independent evaluation reports.

use tastesync_edge::evaluate::{Figures, Scenario, evaluate};
use tastesync_edge::presence::PresenceConfig;

fn main() {
    const SEEDS: u64 = 4;
    println!("presence against ground truth: {SEEDS} days of a busy café, default settings");
    let mut days: Vec<Figures> = Vec::new();
    for seed in 1..=SEEDS {
        let figures = evaluate(&Scenario::day(seed), &PresenceConfig::default());
        println!("  day {seed}: {figures}");
        days.push(figures);
    }
    let visits: usize = days.iter().map(|f| f.visits).sum();
    let weighted = |f: fn(&Figures) -> f64| {
        days.iter().map(|d| f(d) * d.visits as f64).sum::<f64>() / visits as f64
    };
    println!(
        "  all {visits} visits: recall within 30 s {:.1} %, late {:.1}, missed {:.1}, split {:.1}, \
         false {:.1} per 100 visits; alert p50 {:.1} s, p90 {:.1} s (means of the days); \
         departure error p50 {:.0} s",
        weighted(|f| f.recall_30s) * 100.0,
        weighted(|f| f.late_per_100),
        weighted(|f| f.missed_per_100),
        weighted(|f| f.split_per_100),
        weighted(|f| f.false_per_100),
        weighted(|f| f.alert_p50_s),
        weighted(|f| f.alert_p90_s),
        weighted(|f| f.departure_error_p50_s),
    );
}
