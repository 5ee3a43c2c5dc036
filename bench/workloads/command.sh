# N x `true` as an external command (not the builtin). Prints us/op.
N=${1:-1000}
t0=$(date +%s%N)
for ((i = 0; i < N; i++)); do /bin/true; done
t1=$(date +%s%N)
awk -v n="$N" -v ns="$((t1 - t0))" 'BEGIN { printf "command n=%d total=%.3fs per_op=%.2fus\n", n, ns / 1e9, ns / n / 1e3 }'
