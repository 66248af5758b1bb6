//! The load benchmark's quick mode runs end to end, so the benchmark cannot rot.

use std::process::Command;

/// Runs the benchmark binary in quick mode with `args` and returns what it printed; a failed run
/// fails the test.
fn quick(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .args([
            "--quick",
            "--gateway",
            env!("CARGO_BIN_EXE_bughive-gateway"),
        ])
        .env_remove("DATABASE_URL")
        .output()
        .expect("run the benchmark");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn load_benchmark_quick_mode_runs() {
    let stdout = quick(&[]);
    for workload in ["Q1 ", "Q2 ", "Q3 "] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {workload}")))
            .unwrap_or_else(|| panic!("no {workload} row: {stdout}"));
        // req/s, latency, statements per request and RSS are all measured, not blank.
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let rps: f64 = cells[2].parse().expect("req/s");
        assert!(rps > 0.0, "{row}");
        let stmts: f64 = cells[6].parse().expect("statements");
        // Reads: one statement per level. Writes: a transaction with a row lock, the change,
        // the counter and the audit entry.
        let expected = if workload == "Q3 " {
            4.0..=8.0
        } else {
            3.0..=3.0
        };
        assert!(expected.contains(&stmts), "{row}");
    }
    assert!(stdout.contains("failed responses: 0"), "{stdout}");
}

#[test]
fn live_benchmark_quick_mode_runs() {
    let stdout = quick(&["live"]);
    for row in ["| fan-out: committed change -> last of", "| job drain:"] {
        assert!(stdout.contains(row), "no {row} row: {stdout}");
    }
    assert!(stdout.contains("| 0 / 500 / 500 |"), "{stdout}");
    assert!(stdout.contains("failed checks: 0"), "{stdout}");
}
