# multiprocessing.Pool(2).map over N tiny items, pool start-up and shutdown included.
# Prints elapsed seconds.
import multiprocessing as mp
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000


def tiny(x):
    return x * 2 + 1


if __name__ == "__main__":
    mp.set_start_method("fork")
    t0 = time.perf_counter()
    with mp.Pool(2) as pool:
        ys = pool.map(tiny, range(N))
    dt = time.perf_counter() - t0
    assert ys == [x * 2 + 1 for x in range(N)]
    print(f"pool-map n={N} elapsed={dt:.6f}s per_op={dt / N * 1e6:.3f}us")
