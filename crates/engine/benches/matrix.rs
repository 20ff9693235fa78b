//! Criterion benchmark: the TCP/80 matrix of a synthetic cluster, bitset vs pair by pair.
//! `cargo bench -p palisade-engine --bench matrix`

use criterion::{criterion_group, criterion_main, Criterion};
use palisade_engine::synth::{generate, SynthConfig};
use palisade_engine::{matrix, matrix_order, naive_rows, Probe};
use palisade_model::Protocol;

fn bench(c: &mut Criterion) {
    let probe = [Probe::new(Protocol::Tcp, 80)];
    let mut group = c.benchmark_group("matrix");
    group.sample_size(10);
    for (pods, policies) in [(1000, 200), (5000, 1000)] {
        let cluster = generate(&SynthConfig::sized(pods, policies, 1));
        group.bench_function(format!("bitset/{pods}x{policies}"), |b| {
            b.iter(|| matrix(&cluster, &probe))
        });
        let order = matrix_order(&cluster);
        let rows: Vec<usize> = (0..order.len())
            .step_by(order.len().div_ceil(20).max(1))
            .collect();
        group.bench_function(format!("naive-{}rows/{pods}x{policies}", rows.len()), |b| {
            b.iter(|| naive_rows(&cluster, &order, probe[0], &rows))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
