//! Presence against ground truth (`tastesync_edge::evaluate`): a day of a busy café per seed,
//! on default settings, the figures the independent evaluation reports; then the same days
//! with the radio at the ends of its published ranges, to see how much the result rests on
//! the model's own numbers.

use tastesync_edge::evaluate::{Figures, Layout, Radio, Scenario, evaluate};
use tastesync_edge::presence::PresenceConfig;

fn main() {
    const SEEDS: u64 = 4;
    println!("presence against ground truth: {SEEDS} days of a busy café, default settings");
    let plain_glass = Radio {
        path_loss_exponent: 2.0,
        glazing_db: 3.0,
    };
    let crowded = Radio {
        path_loss_exponent: 2.6,
        glazing_db: 6.0,
    };
    let runs = [
        (
            "one box, typical radio (n 2.2, glazing 6 dB)",
            Radio::TYPICAL,
            Layout::TILL,
            true,
        ),
        (
            "one box, open room, plain glass (n 2.0, glazing 3 dB)",
            plain_glass,
            Layout::TILL,
            false,
        ),
        (
            "one box, crowded room (n 2.6, glazing 6 dB)",
            crowded,
            Layout::TILL,
            false,
        ),
        (
            "box and door scanner, typical radio",
            Radio::TYPICAL,
            Layout::TILL_AND_DOOR,
            true,
        ),
        (
            "box and door scanner, open room, plain glass",
            plain_glass,
            Layout::TILL_AND_DOOR,
            false,
        ),
        (
            "box and door scanner, crowded room",
            crowded,
            Layout::TILL_AND_DOOR,
            false,
        ),
    ];
    // PRESENCE_RUNS=1,4 runs only those; PRESENCE_TOML="door_rssi = -64" tries other settings.
    let only = std::env::var("PRESENCE_RUNS").ok();
    let settings: PresenceConfig = match std::env::var("PRESENCE_TOML") {
        Ok(text) => toml::from_str(&text).expect("PRESENCE_TOML: [presence] keys"),
        Err(_) => PresenceConfig::default(),
    };
    for (n, (name, radio, layout, each_day)) in runs.into_iter().enumerate() {
        if only
            .as_ref()
            .is_some_and(|o| !o.split(',').any(|x| x == (n + 1).to_string()))
        {
            continue;
        }
        let mut days: Vec<Figures> = Vec::new();
        for seed in 1..=SEEDS {
            let scenario = Scenario {
                radio,
                layout,
                ..Scenario::day(seed)
            };
            let figures = evaluate(&scenario, &settings);
            if each_day {
                println!("  day {seed}: {figures}");
            }
            days.push(figures);
        }
        let visits: usize = days.iter().map(|f| f.visits).sum();
        let weighted = |f: fn(&Figures) -> f64| {
            days.iter().map(|d| f(d) * d.visits as f64).sum::<f64>() / visits as f64
        };
        println!(
            "  {name}, all {visits} visits: recall within 30 s {:.1} %, late {:.1}, missed {:.1}, \
             split {:.1}, false {:.1} per 100 visits; alert p50 {:.1} s, p90 {:.1} s (means of \
             the days); departure error p50 {:.0} s",
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
}
