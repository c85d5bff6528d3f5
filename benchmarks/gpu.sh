#!/usr/bin/env bash
# Every GPU figure of benchmarks/train.py in one invocation, on a lent GPU host (see benchmarks/GPU.md).
#
# Installs the wheels that benchmarks/gpu_wheels.sh fetched (.whl/) and vaekit from this tree into
# $SITE (PYTHONPATH=$SITE; vaekit copied as pyproject.toml lays it out: plugins/ is
# vaekit.default_plugins), prints the machine and the versions, checks that the carried packages import (mlflow with a sqlite store, Keras), then runs
# benchmarks/train.py for JAX (batch 64 and 512, batch 64 with --steps-per-execution 16) and PyTorch
# (batch 64 and 512), each timing the plain Keras port, the port with Mean trackers and vaekit's loop,
# and ends with a summary table.  A failing step is reported and the next one runs; each step is
# bounded in time so the whole fits in BUDGET_S.  With OUT set, everything printed also goes to
# $OUT/gpu.txt.  Exit status: 0 when every step passed.
#
#   bash benchmarks/gpu.sh
#   PY=/tmp/gpuvenv/bin/python WHL=/tmp/whl311 SITE=/tmp/site311 CLIPS=128 EPOCHS=2 REPEATS=1 TORCH_REPEATS=1 \
#       bash benchmarks/gpu.sh                          # a CPU check (benchmarks/GPU.md)
#
# Settings (environment): PY (python3), WHL (.whl), SITE (/tmp/site); CLIPS, EPOCHS, REPEATS for JAX
# (3072, 4, 3) and TORCH_CLIPS, TORCH_EPOCHS, TORCH_REPEATS for PyTorch (CLIPS, EPOCHS, 2); VARIANTS
# (train.py's variant flags: --tracked-port --no-every-epoch); BUDGET_S (470: no step starts past it,
# and none runs past it), STEP_S (170: the most one train.py run may take); STEPS (names of the steps to
# run, space-separated, default all: jax64 jax512 jax64spe16 torch64 torch512); JAX_CACHE (1: JAX's
# persistent compilation cache, fresh for each invocation, so a repeat after the first skips the XLA
# compiles of the same model; 0: off).
# shellcheck disable=SC2317  # functions run through step's `bash -c`, which shellcheck does not follow
set -o pipefail

cd "$(dirname "$0")/.." || exit 1
PY=${PY:-python3}
WHL=${WHL:-.whl}
SITE=${SITE:-/tmp/site}
# 3072 clips: 48 batches of 64 (3 executions of 16) and 6 of 512 an epoch, no partial batch or execution.
# (On JAX, Keras runs every execution of --steps-per-execution N in full: where N does not divide the
# batches of an epoch, vaekit's endless batch stream gives the last one batches of the next epoch.)
CLIPS=${CLIPS:-3072} EPOCHS=${EPOCHS:-4} REPEATS=${REPEATS:-3}
TORCH_CLIPS=${TORCH_CLIPS:-$CLIPS} TORCH_EPOCHS=${TORCH_EPOCHS:-$EPOCHS} TORCH_REPEATS=${TORCH_REPEATS:-2}
VARIANTS=${VARIANTS:---tracked-port --no-every-epoch}
BUDGET_S=${BUDGET_S:-470}
STEP_S=${STEP_S:-170}
STEPS=${STEPS:-jax64 jax512 jax64spe16 torch64 torch512}
LOGS=$(mktemp -d /tmp/gpu_logs.XXXXXX)
export PYTHONUNBUFFERED=1
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true   # no network there: MLflow's usage reports would only fail
export TF_CPP_MIN_LOG_LEVEL=2
if [ "${JAX_CACHE:-1}" = 1 ]; then
    export JAX_COMPILATION_CACHE_DIR=$LOGS/jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
fi

failed=()

# step NAME SECONDS COMMAND...: run it (a program or a function of this script) with a time limit, its output also in $LOGS/NAME.txt; a failure is noted.
step() {
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo
    echo "=== $name: $* (limit ${limit}s)"
    timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" 2>&1 | tee "$LOGS/$name.txt"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "=== $name: ok, $((SECONDS - start)) s"
    else
        [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo "=== $name: stopped at its ${limit} s limit" | tee -a "$LOGS/$name.txt"
        echo "=== $name: FAILED (exit $rc), $((SECONDS - start)) s"
        failed+=("$name")
    fi
    return 0
}

# shellcheck disable=SC2016  # Python code in single quotes
# train.py through a shim that says at exit whether anything imported TensorFlow (it must not, on JAX or PyTorch).
train() {
    "$PY" -c 'import atexit, os, runpy, sys
sys.path[0] = os.path.abspath("benchmarks")  # as `python benchmarks/train.py` has it (not the tree: vaekit comes from the SITE copy)
atexit.register(lambda: print("tensorflow imported:", "yes" if "tensorflow" in sys.modules else "no"))
sys.argv = ["benchmarks/train.py", *sys.argv[1:]]
runpy.run_path("benchmarks/train.py", run_name="__main__")' "$@"
}

# bench NAME BACKEND BATCH CLIPS EPOCHS REPEATS [more train.py flags]: one train.py run, within the budget.
bench() {
    local name=$1 backend=$2 batch=$3 clips=$4 epochs=$5 repeats=$6 left
    shift 6
    case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
    left=$((BUDGET_S - SECONDS))
    if [ "$left" -lt 20 ]; then
        echo
        echo "=== $name: SKIPPED (${left} s of the ${BUDGET_S} s budget left)"
        failed+=("$name")
        return 0
    fi
    # shellcheck disable=SC2086  # VARIANTS is a list of flags
    step "$name" $((left < STEP_S ? left : STEP_S)) train --backend "$backend" --batch-size "$batch" \
        --clips "$clips" --epochs "$epochs" --repeats "$repeats" $VARIANTS "$@"
}

install() {
    local whl=("$WHL"/*.whl)
    [ -e "${whl[0]}" ] || { echo "no wheels in $WHL: run benchmarks/gpu_wheels.sh first (and carry .whl)"; return 1; }
    echo "installing ${#whl[@]} wheels from $WHL into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${whl[@]}" \
        2>&1 | grep -v "is ignored: it is neither a file nor a directory"
    [ "${PIPESTATUS[0]}" -eq 0 ] || return 1
    # vaekit from this tree, laid out as pyproject.toml installs it (plugins/ is vaekit.default_plugins, which
    # the tree alone, on PYTHONPATH=., lacks); a copy, so nothing is built or written in the tree.
    echo "copying vaekit/ and plugins/ (as vaekit/default_plugins) into $SITE"
    rm -rf "$SITE/vaekit" && cp -r vaekit "$SITE/vaekit" && cp -r plugins "$SITE/vaekit/default_plugins" &&
        find "$SITE/vaekit" -name __pycache__ -prune -exec rm -rf {} +
}

machine() {
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi -L
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
    else
        echo "no nvidia-smi on this machine"
    fi
    echo "$(uname -m), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
    XLA_PYTHON_CLIENT_PREALLOCATE=false "$PY" - <<'EOF'
import importlib.metadata as md, sys
print("python", sys.version.split()[0], sys.executable)
for name in ["jax", "jaxlib", "torch", "keras", "mlflow-skinny", "numpy", "sqlalchemy", "tensorflow"]:
    try:
        print(f"  {name} {md.version(name)}  ({md.distribution(name).locate_file('')})")
    except md.PackageNotFoundError:
        print(f"  {name}: not installed")
try:
    import jax
    print("jax devices:", jax.devices())
except Exception as e:
    print("jax: failed:", repr(e))
try:
    import torch
    print("torch cuda:", torch.cuda.is_available(), torch.version.cuda,
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as e:
    print("torch: failed:", repr(e))
EOF
}

# The carried wheels' own requirements, checked against what this Python sees, then what vaekit's loop imports.
check() {
    SITE=$SITE "$PY" - <<'EOF'
import importlib.metadata as md, os, sys
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
site = os.environ["SITE"]
carried = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions(path=[site])}
bad = 0
for name, dist in sorted(carried.items()):
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            print(f"  {name}: needs {req}, not installed"); bad += 1; continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            print(f"  {name}: needs {req}, has {have}"); bad += 1
print(f"requirements of the {len(carried)} carried packages: {'all met' if not bad else f'{bad} not met (above)'}")
EOF
    "$PY" - <<'EOF'
import os, sys, tempfile, time
sys.path.pop(0)  # the current folder: vaekit comes from $SITE, as in train.py's runs
t = time.perf_counter()
os.environ.setdefault("KERAS_BACKEND", "jax")
import mlflow
import keras
from vaekit import checkpoint, components, distribute, tracking, training  # noqa: F401 (what train.py's vaekit variant imports)
from vaekit.plugins import get_plugin_manager
get_plugin_manager()  # imports the default plugins (vaekit.default_plugins)
with tempfile.TemporaryDirectory() as tmp:
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    with mlflow.start_run():
        mlflow.log_metrics({"a": 1.0, "b": 2.0}, step=0)
        with open(f"{tmp}/x.txt", "w") as f:
            f.write("x")
        mlflow.log_artifact(f"{tmp}/x.txt")
        run = mlflow.active_run().info.run_id
    got = mlflow.tracking.MlflowClient().get_run(run).data.metrics
    assert got == {"a": 1.0, "b": 2.0}, got
    mlflow.set_tracking_uri(None)
print(f"mlflow {mlflow.__version__} (sqlite store, log_metrics, log_artifact), keras {keras.__version__} "
      f"({keras.backend.backend()}), vaekit ({os.path.dirname(training.__file__)}) and its plugins: imported in {time.perf_counter() - t:.1f} s; "
      f"tensorflow imported: {'yes' if 'tensorflow' in sys.modules else 'no'}")
EOF
}

summary() {
    # shellcheck disable=SC2086  # STEPS: one argument a step
    "$PY" - "$LOGS" $STEPS <<'EOF'
import os, re, statistics, sys
from pathlib import Path
logs, names = Path(sys.argv[1]), sys.argv[2:]
med = statistics.median
KEYS = {"plain": "plain keras.Model.fit", "tracked": "port with Mean trackers", "vaekit": "vaekit, checkpoint every"}
def num(v):
    return f"{v:.0f}" if v is not None else "–"
def ratio(v):
    return f"{v[0]:.3f} ({v[1]:.3f}–{v[2]:.3f})" if v else "–"
rows = []
for name in names:
    f = logs / f"{name}.txt"
    text = f.read_text(errors="replace") if f.exists() else ""
    head = re.search(r"backend (\w+) .*?(\d+) clips × (\d+) epochs, batch (\d+), .*?steps_per_execution (\d+), (\d+) repeats", text)
    if head:
        row = {"backend": head[1], "batch": head[4], "spe": head[5], "size": f"{head[2]}×{head[3]}×{head[6]}"}
    else:  # from the step's name (jax64spe16: JAX, batch 64, 16 steps per execution)
        m = re.fullmatch(r"([a-z]+)(\d+)(?:spe(\d+))?", name)
        row = {"backend": m[1], "batch": m[2], "spe": m[3] or "1", "size": "?"} if m else \
            {"backend": "?", "batch": "?", "spe": "?", "size": "?"}
    row["note"] = name if f.exists() else f"{name}: not run"
    table = {}
    for m in re.finditer(r"^(.+?)\s+([\d.]+|nan|inf)\s+([\d.]+|nan|inf)\s+([\d.]+|nan|inf)\s+(\d+)$", text, re.M):
        table[m[1].strip()] = {"whole": float(m[2]), "steady": float(m[3])}
    ratios = {}
    for m in re.finditer(r"^(.+?)\s+([\d.]+) \(([\d.]+)–([\d.]+)\)\s+([\d.]+) \(([\d.]+)–([\d.]+)\)$", text, re.M):
        ratios[m[1].strip()] = {"whole": tuple(map(float, m.group(2, 3, 4))), "steady": tuple(map(float, m.group(5, 6, 7)))}
    if not table:  # the run stopped before its table: medians of the repeats it finished
        reps = []
        for line in re.findall(r"^  repeat \d+: (.*)$", text, re.M):
            reps.append({m[1]: {"whole": float(m[2]), "steady": float(m[3])}
                         for part in line.split("   ") if (m := re.match(r"(.+): (\S+) / (\S+) \(", part))})
        if reps:
            row["note"] += f": partial, {len(reps)} repeat(s)"
            for key in reps[0]:
                table[key] = {k: med(r[key][k] for r in reps) for k in ("whole", "steady")}
            plain = next((k for k in reps[0] if k.startswith(KEYS["plain"])), None)
            for key in reps[0]:
                if key != plain and plain:
                    ratios[key] = {k: (med(v := [r[key][k] / r[plain][k] for r in reps]), min(v), max(v))
                                   for k in ("whole", "steady")}
    if not table and f.exists():
        row["note"] += ": no figures (see its log above)"
    if "tensorflow imported: yes" in text:
        row["note"] += ", TENSORFLOW WAS IMPORTED"
    pick = lambda d, key: next((v for k, v in d.items() if k.startswith(KEYS[key])), None)
    for key in KEYS:
        row[key] = pick(table, key)
    row["ratio"] = pick(ratios, "vaekit")
    rows.append(row)

print("\n=== summary: samples/s, median of repeats; steady = epochs 2..E (compile excluded), whole = the fit call;")
print("    ratio = vaekit (checkpoint every 60 s) / plain port, paired by repeat: median (range); target on a GPU >= 0.95")
if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    print("    (JAX: repeats after the first reuse the XLA compiles of the first, from JAX's compilation cache)")
print()
cols = ["backend", "batch", "steps/exec", "clips×epochs×repeats", "plain steady", "tracked-port steady", "vaekit steady",
        "ratio vaekit/plain steady", "plain whole", "tracked-port whole", "vaekit whole", "ratio vaekit/plain whole", "step / note"]
lines = [[r["backend"], r["batch"], r["spe"], r["size"],
          *(num(r[k] and r[k]["steady"]) for k in KEYS), ratio(r["ratio"] and r["ratio"]["steady"]),
          *(num(r[k] and r[k]["whole"]) for k in KEYS), ratio(r["ratio"] and r["ratio"]["whole"]),
          r["note"]] for r in rows]
width = [max(len(c), *(len(l[i]) for l in lines)) if lines else len(c) for i, c in enumerate(cols)]
fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, width)) + " |"
print(fmt(cols))
print("|" + "|".join("-" * (w + 2) for w in width) + "|")
for l in lines:
    print(fmt(l))
EOF
}

export PY WHL SITE
export -f install machine check train

main() {
    echo "=== vaekit GPU benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
         "$(git status --porcelain 2>/dev/null | grep -q . && echo '(with uncommitted changes)')"
    echo "JAX: $CLIPS clips × $EPOCHS epochs × $REPEATS repeats; PyTorch: $TORCH_CLIPS × $TORCH_EPOCHS × $TORCH_REPEATS;" \
         "variants: plain port $VARIANTS; budget ${BUDGET_S} s, ${STEP_S} s a run;" \
         "JAX compilation cache: ${JAX_COMPILATION_CACHE_DIR:-off}"
    step install 300 install
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    step machine 120 machine
    step check 120 check
    bench jax64 jax 64 "$CLIPS" "$EPOCHS" "$REPEATS"
    bench jax512 jax 512 "$CLIPS" "$EPOCHS" "$REPEATS"
    bench jax64spe16 jax 64 "$CLIPS" "$EPOCHS" "$REPEATS" --steps-per-execution 16
    bench torch64 torch 64 "$TORCH_CLIPS" "$TORCH_EPOCHS" "$TORCH_REPEATS"
    bench torch512 torch 512 "$TORCH_CLIPS" "$TORCH_EPOCHS" "$TORCH_REPEATS"
    summary
    echo
    echo "=== done in $SECONDS s; ${#failed[@]} step(s) failed or skipped${failed:+: ${failed[*]}}"
    [ "${#failed[@]}" -eq 0 ]
}

# One compound command, ended by exit: bash reads no further, so an edit of this file mid-run cannot run a fragment of it.
{
    if [ -n "${OUT:-}" ]; then
        mkdir -p "$OUT"
        main 2>&1 | tee "$OUT/gpu.txt"
    else
        main 2>&1
    fi
    exit
}
