#!/usr/bin/env bash
# Runs every benchmark of the workspace and prints their figures.
#
#   hack/bench.sh            policy engine + end to end
#   hack/bench.sh --only e2e      only the end-to-end benchmark (sync_e2e)
#   hack/bench.sh --only policy   only the policy engine benchmark
#   hack/bench.sh --only fleet    only tmcd at fleet size (fleet_scale; not part of the default run)
#   hack/bench.sh --only tenants  only tenant workspaces vs one workspace (tenants_scale; not part of the default run)
#
# Prerequisites it takes care of: example policies (hack/build-policies.sh),
# test bed binaries (hack/testbed/build.sh, cached), a release tmcd.
# Knobs of the end-to-end benchmark (environment): TMC_BENCH_N (200),
# TMC_BENCH_THROUGHPUT_N (1000), TMC_BENCH_CONCURRENCY (16), TMC_BENCH_RELOADS (6),
# TMC_BENCH_RELOAD_WORKLOADS (5), TMC_BENCH_REPLICAS (0), TMC_BENCH_SETTLE_S (10),
# TMC_BENCH_TIMEOUT_S (300), TMC_BENCH_TMCD (target/release/tmcd), TMC_BENCH_TMCD_LOG (info).
# Knobs of the fleet benchmark: TMC_FLEET_TARGETS (100), TMC_FLEET_WORKLOADS (1000),
# TMC_FLEET_CONCURRENCY (16), TMC_FLEET_LATENCY_N (100), TMC_FLEET_TIMEOUT_S (900); its
# tmcd is the bench binary itself (bench profile), so it is always this checkout's.
# Knobs of the tenants benchmark: TMC_TENANTS (50), TMC_TENANT_WORKLOADS (20), TMC_TENANT_LATENCY_N (50),
# TMC_TENANT_CONCURRENCY (16), TMC_TENANT_TIMEOUT_S (900), TMC_TENANT_BIND_CONCURRENCY (4); its tmcd too.
# Full output goes to target/bench/<name>.log; the tables are printed at the end.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

only=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --only)
            only="${2:-}"
            case "$only" in
                e2e | policy | fleet | tenants) ;;
                *) echo "hack/bench.sh: --only takes 'e2e', 'policy', 'fleet' or 'tenants', got '${only}'" >&2; exit 2 ;;
            esac
            shift 2
            ;;
        -h | --help)
            sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "hack/bench.sh: unknown argument '$1' (see --help)" >&2
            exit 2
            ;;
    esac
done

logs="$root/target/bench"
mkdir -p "$logs"

say() { printf '[bench.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

hack/build-policies.sh >"$logs/build-policies.log" 2>&1 ||
    { tail -20 "$logs/build-policies.log" >&2; echo "hack/bench.sh: hack/build-policies.sh failed (log: $logs/build-policies.log)" >&2; exit 1; }

if [[ -z "$only" || "$only" == "policy" ]]; then
    say "policy engine: cargo bench -p tmc-policy-host (log: $logs/policy.log)"
    cargo bench -p tmc-policy-host 2>&1 | tee "$logs/policy.log" >&2
fi

if [[ -z "$only" || "$only" == "e2e" ]]; then
    say "test bed binaries: hack/testbed/build.sh"
    hack/testbed/build.sh >"$logs/testbed-build.log" 2>&1 ||
        { tail -20 "$logs/testbed-build.log" >&2; echo "hack/bench.sh: hack/testbed/build.sh failed (log: $logs/testbed-build.log)" >&2; exit 1; }
    say "release tmcd: cargo build --release -p tmc-daemon --bin tmcd"
    cargo build --release -p tmc-daemon --bin tmcd
    say "end to end: cargo bench -p tmc-daemon --bench sync_e2e (log: $logs/e2e.log)"
    cargo bench -p tmc-daemon --bench sync_e2e 2>&1 | tee "$logs/e2e.log" >&2
fi

if [[ "$only" == "fleet" || "$only" == "tenants" ]]; then
    say "test bed binaries: hack/testbed/build.sh"
    hack/testbed/build.sh >"$logs/testbed-build.log" 2>&1 ||
        { tail -20 "$logs/testbed-build.log" >&2; echo "hack/bench.sh: hack/testbed/build.sh failed (log: $logs/testbed-build.log)" >&2; exit 1; }
    bench="${only/fleet/fleet_scale}"
    bench="${bench/tenants/tenants_scale}"
    say "$only: cargo bench -p tmc-daemon --bench $bench (log: $logs/$only.log)"
    cargo bench -p tmc-daemon --bench "$bench" 2>&1 | tee "$logs/$only.log" >&2
fi

echo
echo "== figures ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -m)) =="
if [[ -f "$logs/policy.log" && (-z "$only" || "$only" == "policy") ]]; then
    echo "-- policy engine (full output: $logs/policy.log)"
    grep -vE '^ *(Compiling|Finished|Running|Blocking|Downloaded|Updating|warning)' "$logs/policy.log" ||
        echo "(no figure lines found in $logs/policy.log)"
fi
if [[ -f "$logs/e2e.log" && (-z "$only" || "$only" == "e2e") ]]; then
    echo "-- end to end (full output: $logs/e2e.log)"
    sed -n '/^benchmark /,$p' "$logs/e2e.log"
fi
if [[ -f "$logs/fleet.log" && "$only" == "fleet" ]]; then
    echo "-- fleet (full output: $logs/fleet.log)"
    sed -n '/^benchmark fleet_scale/,$p' "$logs/fleet.log"
fi
if [[ -f "$logs/tenants.log" && "$only" == "tenants" ]]; then
    echo "-- tenants (full output: $logs/tenants.log)"
    sed -n '/^benchmark tenants_scale/,$p' "$logs/tenants.log"
fi
