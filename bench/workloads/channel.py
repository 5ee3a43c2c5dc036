# N ints through queue.Queue from a producer thread to the main thread. Prints ns/msg.
import queue
import sys
import threading
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
q = queue.Queue()


def producer():
    put = q.put
    for i in range(N):
        put(i)


t0 = time.perf_counter()
t = threading.Thread(target=producer)
t.start()
get = q.get
s = 0
for _ in range(N):
    s += get()
t.join()
dt = time.perf_counter() - t0
assert s == N * (N - 1) // 2
print(f"channel n={N} total={dt:.3f}s per_op={dt / N * 1e6:.3f}us ({dt / N * 1e9:.0f}ns/msg)")
