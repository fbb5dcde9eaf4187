//! Micro-benchmarks of the per-copy work of forwarding (the workloads of `relay::bench`), so
//! that a regression shows without a network: `cargo bench -p relay --bench per_copy`.
//!
//! With `PER_COPY_COUNT=<workload>:<iterations>` the binary runs one workload that many times
//! instead and exits, for `benches/callgrind.sh` to count its instructions.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use relay::bench::{FanOut, HeaderRewrite, Protect, RtxLookup, TwccFeedback, TwccRecording};
use relay::engine::srtp::SrtpProfile;

/// Subscribers of the fan-out benchmarks.
const FAN_OUTS: [usize; 3] = [1, 10, 100];

fn profiles() -> [(&'static str, SrtpProfile); 2] {
    [
        ("gcm", SrtpProfile::AeadAes128Gcm),
        ("sha1", SrtpProfile::Aes128CmHmacSha1_80),
    ]
}

/// `iters` runs of a workload whose input is prepared apart (the sealing a browser does):
/// only the runs are timed.
fn timed<W, T>(
    iters: u64,
    workload: &mut W,
    prepare: impl Fn(&mut W) -> Vec<u8>,
    run: impl Fn(&mut W, &[u8]) -> T,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let input = prepare(workload);
        let start = Instant::now();
        std::hint::black_box(run(workload, &input));
        total += start.elapsed();
    }
    total
}

fn per_copy(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_copy");
    g.throughput(Throughput::Elements(1));
    let mut rewrite = HeaderRewrite::default();
    g.bench_function("header_rewrite", |b| b.iter(|| rewrite.run()));
    for (name, profile) in profiles() {
        let mut protect = Protect::new(profile);
        g.bench_function(format!("protect_{name}"), |b| b.iter(|| protect.run()));
    }
    let mut twcc = TwccRecording::default();
    g.bench_function("twcc_recording", |b| b.iter(|| twcc.run()));
    for (name, profile) in profiles() {
        let mut rtx = RtxLookup::new(profile);
        g.bench_function(format!("rtx_lookup_{name}"), |b| {
            b.iter_custom(|iters| timed(iters, &mut rtx, RtxLookup::prepare, RtxLookup::run))
        });
    }
    // Per feedback message, not per copy.
    let mut feedback = TwccFeedback::new(SrtpProfile::AeadAes128Gcm);
    g.bench_function("twcc_feedback_gcm", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                &mut feedback,
                TwccFeedback::prepare,
                TwccFeedback::run,
            )
        })
    });
    g.finish();

    // One packet in, N copies out: reported per copy.
    let mut g = c.benchmark_group("fan_out");
    for (name, profile) in profiles() {
        for n in FAN_OUTS {
            g.throughput(Throughput::Elements(n as u64));
            let mut f = FanOut::new(n, profile);
            g.bench_function(format!("{name}_{n}"), |b| {
                b.iter_custom(|iters| timed(iters, &mut f, FanOut::prepare, FanOut::run))
            });
        }
    }
    g.finish();
}

/// Run workload `name` `iterations` times (after its set-up) and print what it did.
fn count(name: &str, iterations: u64) {
    let profile = |p: &str| match p {
        "sha1" => SrtpProfile::Aes128CmHmacSha1_80,
        _ => SrtpProfile::AeadAes128Gcm,
    };
    let mut units = 0u64;
    match name.split('_').collect::<Vec<_>>()[..] {
        ["header", "rewrite"] => {
            let mut w = HeaderRewrite::default();
            (0..iterations).for_each(|_| units += (w.run() > 0) as u64);
        }
        ["protect", p] => {
            let mut w = Protect::new(profile(p));
            (0..iterations).for_each(|_| units += (w.run() > 0) as u64);
        }
        ["twcc", "recording"] => {
            let mut w = TwccRecording::default();
            (0..iterations).for_each(|_| units += (w.run() >= 0) as u64);
        }
        ["twcc", "feedback", p] => {
            let mut w = TwccFeedback::new(profile(p));
            for _ in 0..iterations {
                let feedback = w.prepare();
                w.run(&feedback);
            }
            units = w.taken();
        }
        ["rtx", "lookup", p] => {
            let mut w = RtxLookup::new(profile(p));
            for _ in 0..iterations {
                let nack = w.prepare();
                units += w.run(&nack) as u64;
            }
        }
        ["fan", "out", p, n] => {
            let mut w = FanOut::new(n.parse().unwrap_or(1), profile(p));
            for _ in 0..iterations {
                let packet = w.prepare();
                units += w.run(&packet) as u64;
            }
        }
        _ => {
            eprintln!("unknown workload {name}");
            std::process::exit(2);
        }
    }
    // Copies made (or units of work done): the divisor for instructions per copy.
    println!("{name} {iterations} iterations {units} copies");
}

fn main() {
    if let Ok(spec) = std::env::var("PER_COPY_COUNT") {
        let (name, n) = spec.split_once(':').unwrap_or((&spec, "1000"));
        count(name, n.parse().unwrap_or(1000));
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    per_copy(&mut c);
    c.final_summary();
}
