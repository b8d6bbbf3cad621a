#!/usr/bin/env bash
# Download, here, the wheels that benchmarks/gpu_check.sh and gpu_repro.sh install on a device
# machine whose image lacks them (no network there): TransformerLens and what it imports, the
# corpus's text sources, and the pinned tokenizers. Into .whl/ (keep it out of git:
# echo /.whl/ >> .git/info/exclude). About 37 MB; the device tool carries 64 MiB at most.
set -euo pipefail
PY=${PY:-.venv/bin/python}
mkdir -p .whl
for p in transformer-lens==4.3.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 beartype==0.23.1 \
         typeguard==4.6.1 fancy-einsum==0.0.3 Faker==40.63.0 babel==2.19.0 pycountry==26.2.16 \
         Django==5.2.19 asgiref==3.13.0 sqlparse==0.6.1 tzdata==2026.6 tokenizers==0.23.3; do
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$p"
done
du -sh .whl
