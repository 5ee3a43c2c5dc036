# N x subprocess.run(["true"]). Prints us/op.
import subprocess
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000

t0 = time.perf_counter()
for _ in range(N):
    subprocess.run(["true"])
dt = time.perf_counter() - t0
print(f"command n={N} total={dt:.3f}s per_op={dt / N * 1e6:.2f}us")
