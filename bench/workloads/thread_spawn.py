# N x (threading.Thread start + join), sequential. Prints us/op.
import sys
import threading
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000


def work():
    pass


t0 = time.perf_counter()
for _ in range(N):
    t = threading.Thread(target=work)
    t.start()
    t.join()
dt = time.perf_counter() - t0
print(f"thread-spawn n={N} total={dt:.3f}s per_op={dt / N * 1e6:.2f}us")
