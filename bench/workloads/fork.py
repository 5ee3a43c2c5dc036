# N x (os.fork + waitpid), child calls os._exit(0) at once. Prints us/op.
import os
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000

t0 = time.perf_counter()
for _ in range(N):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
dt = time.perf_counter() - t0
print(f"fork n={N} total={dt:.3f}s per_op={dt / N * 1e6:.2f}us")
