import time

from benchmarks import Benchmark, Result, format_table, measure


def test_measure_interleaves_and_reports_ratio():
    order = []
    bench = Benchmark("sleepy", ours=lambda: (order.append("o"), time.sleep(0.002)),
                      reference=lambda: (order.append("r"), time.sleep(0.004)),
                      reference_name="slower", target=1.0, repeats=4, warmup=1)
    result = measure(bench)
    assert order[:2] == ["o", "r"] and order[2:6] == ["o", "r", "r", "o"]
    assert 0.2 < result.ratio < 0.9 and result.meets_target
    table = format_table([result, Result("x", "y", 2.0, 1.0, None)])
    assert "sleepy" in table and "slower" in table and "ok" in table and "2.00" in table
    assert Result("x", "y", 2.0, 1.0, 1.5).meets_target is False


def test_cpu_time_ignores_sleeping():
    busy = lambda: sum(i * i for i in range(20000))
    bench = Benchmark("cpu", ours=lambda: time.sleep(0.01), reference=busy, repeats=3)
    assert measure(bench, cpu_time=True).ratio < 0.5  # sleeping costs no CPU
    assert measure(bench).ours_s >= 0.009


def test_compute_limit_does_the_work_flops_in_square_matmuls():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.bench_landscape import PEAK_SIZE, compute_limit

    a, b = torch.randn(512, 256), torch.randn(256, 512)
    limit, flops = compute_limit(lambda: a @ b)
    assert flops == 2 * 512 * 256 * 512
    with FlopCounterMode(display=False) as counter:
        limit()
    assert counter.get_total_flops() == flops == 4 * 2 * PEAK_SIZE**3
