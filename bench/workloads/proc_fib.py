# 8 x fib(25) on multiprocessing.Pool(2) against the same 8 calls one after the other;
# the pool's start-up is part of the parallel time. Best of 3 rounds each.
import multiprocessing as mp
import time


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


if __name__ == "__main__":
    mp.set_start_method("fork")
    items = [25] * 8
    best_serial = best_parallel = 1000.0
    for _ in range(3):
        t0 = time.perf_counter()
        a = [fib(x) for x in items]
        best_serial = min(best_serial, time.perf_counter() - t0)
        t1 = time.perf_counter()
        with mp.Pool(2) as pool:
            b = pool.map(fib, items)
        best_parallel = min(best_parallel, time.perf_counter() - t1)
        assert a == b
    print(f"serial={best_serial:.4f}s parallel={best_parallel:.4f}s speedup={best_serial / best_parallel:.2f}x")
