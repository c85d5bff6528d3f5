#!/usr/bin/env bash
# Fetch the wheels a lent GPU host lacks for `python benchmarks/train.py --backend jax|torch`.
#
# Run it HERE (a machine that reaches PyPI), in the repo; the GPU host reaches nothing, so
# benchmarks/gpu.sh installs exactly these files there (pip --no-index --no-deps --target).
#
#   bash benchmarks/gpu_wheels.sh                      # -> .whl/ in the repo root, CPython 3.12
#   PYVER=3.11 bash benchmarks/gpu_wheels.sh /tmp/whl311   # the same set for Python 3.11 (a CPU check here)
#
# The host (KINDS.md of the device tool: Python 3.12, JAX with CUDA, PyTorch, numpy, scipy,
# pandas, matplotlib, rich, absl-py, h5py, ml-dtypes, packaging, requests, pyyaml, anyio, h11, ...)
# has no Keras, no MLflow and no TensorFlow.  Carried: Keras and what it needs beyond that list,
# mlflow-skinny and what `import mlflow` + a sqlite tracking store need (SQLAlchemy, Alembic, Mako,
# the OpenTelemetry, pydantic, FastAPI and databricks-sdk packages it declares), and four small
# packages the host has in an unknown version, pinned here because vaekit or mlflow need recent ones
# (pluggy, click, typing-extensions, protobuf).  vaekit itself runs from the tree (PYTHONPATH=.).
# Versions are the ones installed on the development machine when this was written; `--no-deps`
# everywhere, so each requirement is named below.  Keep one version of each: pip stops on two.
set -euo pipefail

PYVER=${PYVER:-3.12}
PYTHON=${PYTHON:-python3}
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
dest=${1:-.whl}

WHEELS=(
    # Keras 3 (absl-py, h5py, ml-dtypes, numpy, packaging, rich: on the host)
    keras==3.15.1 namex==0.1.0 optree==0.20.0
    # MLflow without its server extras; its declared requirements the host lacks
    mlflow-skinny==3.17.2
    cachetools==7.3.3 databricks-sdk==0.162.0 google-auth==2.63.0 pyasn1==0.6.3 pyasn1-modules==0.4.2
    cryptography==48.0.0 cffi==2.0.0 pycparser==3.0
    fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0
    pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
    gitpython==3.2.1 gitdb==4.0.12 smmap==5.0.3 importlib-metadata==9.1.0
    opentelemetry-api==1.45.2 opentelemetry-proto==1.45.2 opentelemetry-sdk==1.45.2
    opentelemetry-semantic-conventions==0.66b2
    python-dotenv==1.2.2 sqlparse==0.6.1
    # the sqlite tracking store
    sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3
    # on the host, version unknown: pinned (vaekit: pluggy>=1.3, click>=8.1; pydantic: typing-extensions>=4.14.1)
    pluggy==1.6.0 click==8.4.0 typing-extensions==4.16.0 protobuf==7.36.2
)

if [ "$dest" = .whl ]; then
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
fi
mkdir -p "$dest"
rm -f "$dest"/*.whl   # one version of each: stale wheels from an earlier pin would stop the install

echo "downloading ${#WHEELS[@]} wheels for CPython $PYVER, manylinux x86_64, into $dest"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$dest" "${WHEELS[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

count=$(ls "$dest"/*.whl | wc -l)
if [ "$count" -ne "${#WHEELS[@]}" ]; then
    echo "expected ${#WHEELS[@]} wheels, got $count" >&2
    exit 1
fi
ls -l "$dest"/*.whl | awk '{printf "%9.1f KiB  %s\n", $5 / 1024, $NF}'
total=$(cat "$dest"/*.whl | wc -c)
echo "total: $count wheels, $(awk -v b="$total" 'BEGIN {printf "%.1f MiB", b / 1048576}')"
