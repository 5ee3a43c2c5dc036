# N ints from a child process to the parent over multiprocessing.Queue. Prints us/op.
import multiprocessing as mp
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100000


def producer(q, n):
    put = q.put
    for i in range(n):
        put(i)


if __name__ == "__main__":
    mp.set_start_method("fork")
    t0 = time.perf_counter()
    q = mp.Queue()
    p = mp.Process(target=producer, args=(q, N))
    p.start()
    get = q.get
    s = 0
    for _ in range(N):
        s += get()
    p.join()
    dt = time.perf_counter() - t0
    assert s == N * (N - 1) // 2
    print(f"pipe-ints n={N} total={dt:.3f}s per_op={dt / N * 1e6:.3f}us")
