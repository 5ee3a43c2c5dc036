# Two fib(27) calls on two threads against the same two calls one after the other.
# Best of 3 rounds each. The GIL keeps the speedup below 1x.
import threading
import time


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


best_serial = best_parallel = 1000.0
for _ in range(3):
    t0 = time.perf_counter()
    a = [fib(27), fib(27)]
    best_serial = min(best_serial, time.perf_counter() - t0)
    t1 = time.perf_counter()
    out = [None, None]

    def work(k):
        out[k] = fib(27)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    best_parallel = min(best_parallel, time.perf_counter() - t1)
    assert a == out
print(f"serial={best_serial:.4f}s parallel={best_parallel:.4f}s speedup={best_serial / best_parallel:.2f}x")
