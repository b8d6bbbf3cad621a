# Shared set-up of the device scripts (gpu_check.sh, gpu_repro.sh); source it, do not run it.
# Where transformer_lens is missing, installs the wheels carried in .whl (benchmarks/gpu_wheels.sh)
# into /tmp/site, then puts the repository on PYTHONPATH.
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 TQDM_DISABLE=1
PY=${PY:-python3}
if ! $PY -c "import transformer_lens, faker" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
