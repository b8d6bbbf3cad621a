"""``python -m mono_utils``: build artifacts, inspect them, run notebooks, share bundles."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .pipeline.parallel import run_parallel
from .pipeline.presets import PRESETS, validate
from .notebooks import execute_notebook, format_table, notebook_paths
from .store.artifacts import ArtifactStore, repo_root
from .store.bundle import export_bundle, import_bundle


def _machine() -> str:
    import torch  # lazy: torch is heavy
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def max_jobs() -> int:
    """The most ``--jobs`` a machine can use: one stage per core (at least 2)."""
    return max(2, os.cpu_count() or 1)


class _FromEnv(str):
    """A preset name read from ``$MONO_PRESET`` (not typed as --preset): errors name the variable."""


def _env_preset() -> str:
    """--preset's default: ``$MONO_PRESET``, or ``default`` when it is unset or empty (as get_preset)."""
    value = os.environ.get("MONO_PRESET")
    return _FromEnv(value) if value else "default"


def _only_error(only, what: str, names: list[str]) -> str | None:
    """Why --only cannot be honoured: given with no word, or an empty one (it would match every name)."""
    if only is not None and (not only or not all(o.strip() for o in only)):
        return (f"--only needs words of {what} names (an empty one matches every {what}): {what} names are "
                f"{', '.join(names)}")
    return None


def _build_args_error(args, names: list[str]) -> str | None:
    """Why ``build``'s --jobs/--only/--stage cannot be honoured (None: they can)."""
    if _only_error(args.only, "stage", names):
        return _only_error(args.only, "stage", names)
    if not 1 <= args.jobs <= max_jobs():
        return (f"--jobs {args.jobs} is more than this machine can use ({os.cpu_count()} cores): use --jobs "
                f"{max_jobs()} or fewer" if args.jobs > 1 else f"--jobs must be at least 1, got {args.jobs}")
    if args.stage is not None and args.stage not in names:
        return f"unknown build stage {args.stage!r}: choose one of {', '.join(names)}"
    if args.only and not any(o.lower() in n.lower() for n in names for o in args.only):
        return (f"no build stage matches --only {' '.join(args.only)}: stage names are {', '.join(names)} "
                f"(--only keeps the stages whose name contains a word)")
    return None


def cmd_build(args) -> int:
    # lazy, as below for the app and the atlas: the stage graph imports torch and every lesson
    # (1.6 s); --help, info, export and import need none of it
    from .stages import STAGE_DEPS, build_stages
    preset = validate(PRESETS[args.preset])  # the flag wins over $MONO_PRESET
    store = ArtifactStore(args.artifacts)
    problem = _build_args_error(args, [n for n, _ in build_stages(preset, store)])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.jobs > 1 and not args.stage:
        names = [n for n, _ in build_stages(preset, store)
                 if not args.only or any(o.lower() in n.lower() for o in args.only)]
        return run_parallel(names, STAGE_DEPS, args.jobs, preset.name, store.root)
    rows = []
    for name, fn in build_stages(preset, store):
        if args.stage and name != args.stage:
            continue
        if args.only and not any(o.lower() in name.lower() for o in args.only):
            continue
        t = time.time()
        print(f"== {name} ({preset.name})", flush=True)
        fn()
        rows.append((name, time.time() - t))
    print("\n| stage | seconds |\n|---|---:|")
    for name, sec in rows:
        print(f"| {name} | {sec:.0f} |")
    print(f"| total | {sum(s for _, s in rows):.0f} |\nmachine: {_machine()}")
    return 0


def cmd_info(args) -> int:
    store = ArtifactStore(args.artifacts)
    entries = store.entries()
    if args.json:
        print(json.dumps(entries, indent=1, default=str))
        return 0
    if not entries:
        print(f"nothing built yet in {store.root} (run: python -m mono_utils build --preset default)")
        return 0
    print(f"artifacts in {store.root}")
    for e in entries:
        m = e["metrics"]
        keys = [k for k in ("val_loss", "loss_recovered", "l0", "fvu", "dead_frac", "rows", "documents") if k in m]
        summary = ", ".join(f"{k}={m[k]:.4g}" if isinstance(m[k], float) else f"{k}={m[k]}" for k in keys)
        status = "ok" if e["ok"] else "DAMAGED: " + "; ".join(e["problems"][:2])
        print(f"  {e['kind']:>12}/{e['name']:<40} {e['bytes'] / 2**20:8.1f} MB  {status}  {summary}")
    return 0


def cmd_run_notebooks(args) -> int:
    out_dir = Path(args.out) if args.out else repo_root() / "runs" / args.preset
    paths = notebook_paths()
    if _only_error(args.only, "notebook", [p.name for p in paths]):
        print(f"error: {_only_error(args.only, 'notebook', [p.name for p in paths])}", file=sys.stderr)
        return 2
    if args.only:
        paths = [p for p in paths if any(o in p.name for o in args.only)]
    if not paths:
        raise ValueError("no notebooks matched: check --only")
    _guard_executed_copies(out_dir, paths, args.force)
    env = dict(os.environ)
    if args.artifacts:
        env["MONO_ARTIFACTS"] = str(Path(args.artifacts).resolve())
    if args.jobs < 1:
        print(f"error: --jobs {args.jobs}: run at least one notebook at a time (e.g. --jobs 2 on two cores)",
              file=sys.stderr)
        return 2

    def run_one(p):
        print(f"== {p.name}", flush=True)
        r = execute_notebook(p, out_dir / p.name, preset=args.preset, env=env, timeout=args.timeout,
                             total_timeout=args.notebook_timeout or None)
        print(f"   {p.name}: {'ok' if r['ok'] else 'FAILED'} in {r['seconds']:.0f}s, peak {r['peak_mb']:.0f} MB",
              flush=True)
        if not r["ok"]:
            print(r["log"])
        return r

    if args.jobs > 1 and "OMP_NUM_THREADS" not in env:   # N kernels share the cores, as build --jobs N's stages do
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))
    # each notebook is its own kernel process, so --jobs N runs N of them side by side (threads only wait)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(run_one, paths))    # in the notebooks' order, whatever order they finish in
    table = format_table(rows)
    side = f"; {args.jobs} notebooks at a time" if args.jobs > 1 else ""
    print("\n" + table + f"\n\nmachine: {_machine()}; preset {args.preset}{side}; executed copies in {out_dir}")
    (out_dir / "timings.md").write_text(table + f"\n\nmachine: {_machine()}{side}\n", encoding="utf-8")
    return 0 if all(r["ok"] for r in rows) else 1


def cmd_export(args) -> int:
    path = export_bundle(args.path, ArtifactStore(args.artifacts))
    print(f"wrote {path}")
    return 0


def cmd_import(args) -> int:
    import_bundle(args.path, ArtifactStore(args.artifacts))
    print(f"imported {args.path}")
    return 0


def cmd_app(args) -> int:
    from .apps import launch_app   # lazy: imports torch and the widgets (see cmd_build)
    return launch_app(args.name, port=args.port, ip=args.ip, preset=args.preset, store=ArtifactStore(args.artifacts),
                      max_kernels=args.max_kernels, cull_idle=args.cull_idle, token=args.token) or 0


def _guard_executed_copies(out_dir: Path, paths: list[Path], force: bool) -> None:
    """run-notebooks writes executed solutions: never over the notebooks themselves, nor a student's without --force."""
    from .lessons.student import check_out_folder, guard_writes   # lazy: only when notebooks are run
    check_out_folder(out_dir)
    if out_dir.resolve() == (repo_root() / "notebooks").resolve() or out_dir.resolve() in {p.parent.resolve() for p in paths}:
        raise ValueError(f"--out {out_dir} is the notebooks' own folder: the executed copies (with outputs) would replace "
                         f"the committed notebooks. Choose another folder, e.g. runs/")
    for b in guard_writes({out_dir / p.name: None for p in paths}, writes="solution", force=force):
        print(f"kept a copy of {b.name} in {b.parent}")


def cmd_lessons(args) -> int:
    from .lessons.student import write_student_versions
    written = write_student_versions(args.out, args.notebooks, force=args.force, graded=args.graded)
    for path, n in written:
        print(f"wrote {path} ({n} checked exercise{'s' if n != 1 else ''})")
    print(f"{len(written)} student notebooks in {args.out}: solutions replaced by stubs, " +
          ("graded: no solutions or hints, checks that say what is off without the formula" if args.graded
           else "folded below each check"))
    return 0


def cmd_atlas(args) -> int:
    from .atlas.site import build_atlas   # lazy: imports torch and every lesson (see cmd_build)
    rep = build_atlas(validate(PRESETS[args.preset]), args.out, args.sae or (), ArtifactStore(args.artifacts),
                      build_missing=not args.no_build, live=not args.no_live)
    if rep["missing"]:
        print(f"left out (not built, --no-build): {', '.join(rep['missing'])}")
    if rep.get("kept"):
        print(f"kept {len(rep['kept'])} file(s) of yours that the atlas did not write: {', '.join(rep['kept'][:10])}"
              + (" ..." if len(rep["kept"]) > 10 else ""))
    sets = ", ".join(f"{k} {sum(v['bytes'].values()) / 1e6:.1f} MB" for k, v in rep["sets"].items())
    print(f"wrote {rep['out']}/index.html: {rep['bytes'] / 1e6:.1f} MB in {rep['files']} files ({sets}); "
          f"{rep['seconds']['total']:.0f} s\nopen it in a browser (no server needed): "
          f"{(Path(rep['out']) / 'index.html').as_uri()}")
    return 0


def cmd_report(args) -> int:
    from .report import write_report   # lazy: loads every lesson's artifacts (see cmd_build)
    out = write_report(args.preset, args.artifacts, out=args.out, runs=args.runs)
    print(f"wrote {out}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mono_utils",
                                 description="monosemanticity-lab: build artifacts, run notebooks, share bundles.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--artifacts", default=None,
                        help="artifact store folder (default data/artifacts or $MONO_ARTIFACTS)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add = sub.add_parser
    sub.add_parser = lambda *a, **k: _add(*a, parents=[common], **k)
    b = sub.add_parser("build", help="build everything the notebooks need for a preset")
    b.add_argument("--preset", default=_env_preset(),
                   help="smoke | default | paper | paper-dry (the paper's shapes on a CPU)")
    b.add_argument("--only", nargs="*", help="only stages whose name contains one of these words (e.g. model)")
    b.add_argument("--jobs", type=int, default=1,
                   help="build independent stages side by side in this many processes (e.g. 2 on 2 cores)")
    b.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # one stage by exact name (--jobs workers)
    b.set_defaults(fn=cmd_build)
    i = sub.add_parser("info", help="what is built, where, with metrics")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_info)
    r = sub.add_parser("run-notebooks", help="execute every notebook top to bottom into runs/ and print timings")
    r.add_argument("--preset", default=_env_preset())
    r.add_argument("--only", nargs="*", help="only notebooks whose file name contains one of these")
    r.add_argument("--out", default=None, help="folder for executed copies (default runs/<preset>)")
    r.add_argument("--timeout", type=int, default=3600, help="seconds a cell may run (then it fails, named)")
    r.add_argument("--notebook-timeout", type=int, default=7200,
                   help="seconds a whole notebook may run (then it is stopped, named with its cell; 0: no limit)")
    r.add_argument("--jobs", type=int, default=1,
                   help="notebooks executed side by side, each in its own kernel (make run: 2, one per core)")
    r.add_argument("--force", action="store_true",
                   help="replace notebooks already in --out that are not earlier executed copies (a student's: each is "
                        "first copied to <out>/backups/)")
    r.set_defaults(fn=cmd_run_notebooks)
    e = sub.add_parser("export", help="write every built artifact into one bundle file")
    e.add_argument("path")
    e.set_defaults(fn=cmd_export)
    im = sub.add_parser("import", help="verify and unpack a bundle made by export")
    im.add_argument("path")
    im.set_defaults(fn=cmd_import)
    le = sub.add_parser("lessons", help="write the student versions of the notebooks (exercises as stubs)")
    le.add_argument("--out", default="exercises", help="folder for the student notebooks (default exercises/)")
    le.add_argument("--notebooks", default=None, help="folder of the source notebooks (default notebooks/)")
    le.add_argument("--force", action="store_true",
                    help="replace student notebooks already in --out that differ (a student's answers: each is first "
                         "copied to <out>/backups/); a solution notebook is never replaced")
    le.add_argument("--graded", action="store_true",
                    help="versions for graded use: no folded solutions or hints, and checks whose failure messages "
                         "say what is off without the reference formula")
    le.set_defaults(fn=cmd_lessons)
    a = sub.add_parser("app", help="serve the steering or rating widget as a Voila app")
    a.add_argument("name", choices=["steering", "rating"])
    a.add_argument("--port", type=int, default=8866)
    a.add_argument("--ip", default="127.0.0.1", help="0.0.0.0 to serve a classroom network (a token is then required)")
    a.add_argument("--preset", default=_env_preset(), help="the built preset to serve (refused if not built)")
    a.add_argument("--max-kernels", type=int, default=None,
                   help="most pages open at once, one kernel each (default: what 3/4 of the free memory holds)")
    a.add_argument("--cull-idle", type=int, default=600,
                   help="seconds after which an idle kernel whose page is closed is shut down (default 600)")
    a.add_argument("--token", default=None,
                   help="the token students add to the URL (beyond localhost; default: one is made up and printed)")
    a.set_defaults(fn=cmd_app)
    at = sub.add_parser("atlas", help="write every feature and neuron as a static web site that opens offline")
    at.add_argument("--preset", default=_env_preset())
    at.add_argument("--out", default="atlas", help="folder to write (replaced if it holds an older atlas)")
    at.add_argument("--sae", action="append", metavar="SAE",
                    help="add a unit set besides A/1 and A's neurons: paper2023 (the paper's recipe), topk, "
                         "B/1 (with B's neurons), A/<size> (a family member), family or transcoder (notebook 07's); "
                         "repeat for several")
    at.add_argument("--no-build", action="store_true",
                    help="build nothing: show only what is built (the unit sets' indexes must be)")
    at.add_argument("--no-live", action="store_true",
                    help="the static atlas alone: no live model (try your own text, steering) in the page")
    at.set_defaults(fn=cmd_atlas)
    rp = sub.add_parser("report", help="write docs/results.md from a built store: every figure the docs quote")
    rp.add_argument("--preset", default=_env_preset())
    rp.add_argument("--out", default=None, help="file to write (default docs/results.md)")
    rp.add_argument("--runs", default=None, help="folder make run wrote its records to (default runs/<preset>)")
    rp.set_defaults(fn=cmd_report)
    return ap


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    if getattr(args, "preset", None) is not None:
        source = " (from $MONO_PRESET: unset it or fix it)" if isinstance(args.preset, _FromEnv) else ""
        if not args.preset.strip():
            print(f"error: the preset name is empty{source}: choose one of {', '.join(PRESETS)}", file=sys.stderr)
            return 2
        if args.preset not in PRESETS:
            print(f"error: unknown preset {args.preset!r}{source}: choose one of {', '.join(PRESETS)}",
                  file=sys.stderr)
            return 2
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("interrupted: finished artifacts are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ConnectionError, RuntimeError, ImportError, OSError) as e:
        if os.environ.get("MONO_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
