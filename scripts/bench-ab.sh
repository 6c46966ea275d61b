#!/usr/bin/env bash
# The end-to-end A/B of docs/performance.md: this checkout's services against those of an
# earlier commit, in one run, rounds interleaved (the order alternates), driven by the same
# load generator (this checkout's `msgkit bench`, copied next to the earlier binaries: it
# starts the services found beside itself).
#
#   scripts/bench-ab.sh BASE_REV [ROUNDS] [E2E_SECS]
#
# Builds both in release (the earlier one in a worktree under /var/tmp, its own target
# directory), runs `msgkit bench --stages e2e --overload-secs 0` ROUNDS times each, and
# prints every round's figures and the median of the paired new/base ratios. Reports stay
# in target/bench-ab/<time>/{base,new}-<round>/.
set -euo pipefail

base_rev=${1:?usage: scripts/bench-ab.sh BASE_REV [ROUNDS] [E2E_SECS]}
rounds=${2:-3}
secs=${3:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
# An existing checkout and target of the base commit may be given (BASE_TREE, BASE_TARGET).
base_tree=${BASE_TREE:-/var/tmp/msgkit-ab-$(git -C "$root" rev-parse --short "$base_rev")}
base_target=${BASE_TARGET:-$base_tree-target}
out=$root/target/bench-ab/$(date -u +%Y%m%dT%H%M%SZ)

if [ ! -d "$base_tree" ]; then
    git -C "$root" worktree add -q --detach "$base_tree" "$base_rev"
fi
echo "bench-ab: building $base_rev (release) in $base_tree" >&2
(cd "$base_tree" && CARGO_TARGET_DIR=$base_target cargo build -q --release --workspace --bins)
echo "bench-ab: building this checkout (release)" >&2
(cd "$root" && cargo build -q --release --workspace --bins)
cp "$target/release/msgkit" "$base_target/release/msgkit-ab"

run() { # side round
    local bin=$target/release/msgkit
    [ "$1" = base ] && bin=$base_target/release/msgkit-ab
    echo "bench-ab: round $2, $1" >&2
    "$bin" bench --stages e2e --e2e-secs "$secs" --overload-secs 0 --out "$out/$1-$2" >/dev/null
}
for round in $(seq 1 "$rounds"); do
    if [ $((round % 2)) -eq 1 ]; then run base "$round"; run new "$round"; else run new "$round"; run base "$round"; fi
done

python3 - "$out" "$rounds" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(side, r):
    return json.load(open(f"{out}/{side}-{r}/report.json"))["end_to_end"]
def figures(e):
    half = e["open_loop"][1] if len(e["open_loop"]) > 1 else {}
    return {
        "orders/s": e["max_orders_per_sec"],
        "services CPU s / 1,000 orders": e["cores_per_1000_orders_per_sec"],
        "machine CPU s / 1,000 orders": e.get("machine_cpu_seconds_per_1000_orders"),
        "p99 ms at half the max": half.get("p99_ms"),
    }
rows = {}
for r in range(1, rounds + 1):
    b, n = figures(load("base", r)), figures(load("new", r))
    for k in b:
        rows.setdefault(k, []).append((b[k], n[k]))
print(f"| figure | base (each round) | new (each round) | median new/base |")
print("| --- | --- | --- | ---: |")
fmt = lambda v: "-" if v is None else (f"{v:.0f}" if v >= 10 else f"{v:.2f}")
for k, pairs in rows.items():
    ratios = [n / b for b, n in pairs if b and n]
    med = f"{statistics.median(ratios):.2f}" if ratios else "-"
    print(f"| {k} | {', '.join(fmt(b) for b, _ in pairs)} | {', '.join(fmt(n) for _, n in pairs)} | {med} |")
for r in range(1, rounds + 1):
    for side in ("base", "new"):
        cpu = load(side, r)["cpu_seconds_per_1000_orders"]
        print(f"round {r} {side}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items())))
print(f"reports: {out}")
EOF
