# N ints from a child process to the parent over multiprocessing.Pipe (no feeder thread,
# one pickle + one write per message). Prints us/op.
import multiprocessing as mp
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100000


def producer(conn, n):
    send = conn.send
    for i in range(n):
        send(i)
    send(None)
    conn.close()


if __name__ == "__main__":
    mp.set_start_method("fork")
    t0 = time.perf_counter()
    rd, wr = mp.Pipe(duplex=False)
    p = mp.Process(target=producer, args=(wr, N))
    p.start()
    wr.close()
    recv = rd.recv
    s = 0
    while (v := recv()) is not None:
        s += v
    p.join()
    dt = time.perf_counter() - t0
    assert s == N * (N - 1) // 2
    print(f"pipe-ints-pipe n={N} total={dt:.3f}s per_op={dt / N * 1e6:.3f}us")
