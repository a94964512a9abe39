"""The ``infoblocks`` command line.

    infoblocks demo                      list the demos (one per recipe that has one)
    infoblocks demo NAME [--quick]       run a demo problem with a known answer, write its figure
    infoblocks list [KIND]               every registered block with the plugin that provides it
    infoblocks config RECIPE [--full] [--preset NAME]
                                         print a recipe's configuration as TOML (--full: the
                                         expanded routine: globals, models, phases, evaluation)
    infoblocks run CONFIG.toml --data X.npy [--data Y.npy] --out DIR [--nproc N] [--resume]
                                         fit the recipe of a config file on the given arrays
                                         (.npy files are opened memory-mapped; --nproc N runs
                                         N processes under torch.distributed.run; the whole
                                         training state is checkpointed in DIR/checkpoint and
                                         --resume continues from it)
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from infoblocks.blocks.base import BLOCK_KINDS
from infoblocks.blocks.errors import ConfigError, InfoblocksError
from infoblocks.blocks.recipe import read_toml
from infoblocks.plugins.manager import get_plugin_manager
from infoblocks.plugins.registry import get_registry, recipe_from_dict


def _demo_recipes() -> dict[str, type]:
    """Demo name -> recipe class; a built-in recipe named ``parametric_umap`` is also
    ``umap`` (a plugin's recipe only by its own name: no two plugins share an alias)."""
    demos: dict[str, type] = {}
    builtin: set[str] = set()
    for entry in get_registry().entries("recipe"):
        if entry.block.has_demo():
            demos[entry.name] = entry.block
            if entry.plugin == "recipes":
                builtin.add(entry.name)
    for name in sorted(builtin):
        short = name.split("_", 1)[1] if "_" in name else None
        if short and short not in demos:
            demos[short] = demos[name]
    for entry in get_registry().entries("recipe"):  # further demos a recipe names (mi-sweep)
        for name in _extra_demos(entry.block):
            demos.setdefault(name, entry.block)
    return demos


def _extra_demos(cls: type) -> dict[str, tuple[str, str]]:
    """``extra_demos`` of a recipe class: demo name -> (classmethod name, summary)."""
    return getattr(cls, "extra_demos", None) or {}


def _print_demos(demos: dict[str, type]) -> None:
    print("Demos (run one with `infoblocks demo NAME`, add --quick for a short budget):")
    seen = set()
    for name, cls in sorted(demos.items()):
        if cls in seen:
            continue
        seen.add(cls)
        extra = _extra_demos(cls)
        aliases = [n for n, c in demos.items() if c is cls and n != cls.name and n not in extra]
        label = cls.name + (f" (or {', '.join(aliases)})" if aliases else "")
        print(f"  {label:<34} {cls.summary}")
        for name, (_, summary) in extra.items():
            print(f"  {name:<34} {summary}")


def cmd_demo(args: argparse.Namespace) -> int:
    demos = _demo_recipes()
    if not args.name:
        _print_demos(demos)
        return 0
    names = sorted({cls.name for cls in demos.values()}) if args.name == "all" else [args.name]
    for name in names:
        if name not in demos:
            close = difflib.get_close_matches(name, sorted(demos), n=3, cutoff=0.6)
            if close and ("recipe", name) not in get_registry():
                raise ConfigError(f"No demo named {name!r}; did you mean "
                                  f"{' or '.join(map(repr, close))}? Demos: {sorted(demos)}.")
            get_registry().entry("recipe", name)  # unknown: error with close matches
            raise ConfigError(f"Recipe {name!r} has no demo; demos: {sorted(demos)}.")
        cls = demos[name]
        out_dir = Path(args.out) / cls.name if args.name == "all" else Path(args.out)
        _make_dir(out_dir)
        print(f"== demo {cls.name}: {cls.summary}")
        extra = _extra_demos(cls).get(name) if args.name != "all" else None
        result = (getattr(cls, extra[0]) if extra else cls.demo)(out_dir, quick=args.quick)
        _print_result(result)
        (out_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
        print(f"   results and figure in {out_dir}/")
    return 0


def _print_result(result: dict[str, Any]) -> None:
    for key, value in result.items():
        shown = f"{value:.6g}" if isinstance(value, float) else value
        print(f"   {key}: {shown}")


def cmd_list(args: argparse.Namespace) -> int:
    registry = get_registry()
    kinds = [args.kind] if args.kind else list(BLOCK_KINDS)
    for kind in kinds:
        entries = registry.entries(kind)
        print(f"{kind} ({len(entries)})")
        for e in entries:
            print(f"  {e.name:<26} {e.plugin:<14} {e.block.__module__}.{e.block.__qualname__}")
    for failure in get_plugin_manager().failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.recipe.endswith(".toml"):  # a config of one's own, plugin blocks included
        if args.preset:
            raise ConfigError("--preset names a recipe's preset; a config file is printed as "
                              "it is written (drop --preset).")
        recipe = recipe_from_dict(read_toml(args.recipe))
        cls = type(recipe)
    else:
        cls = get_registry().get("recipe", args.recipe)
        recipe = cls.preset(args.preset) if args.preset else cls()
    text = recipe.to_toml(full=args.full)
    # unset settings are not written: name the ones a run must set (IMNN's theta_fid), so a
    # config started from this output does not miss them
    unset = [name for name in getattr(cls, "required_settings", ())
             if getattr(recipe, name, None) is None]
    if unset:
        first, _, rest = text.partition("\n")
        text = f"{first}\n" + "".join(f"# {name} = ...   (required: set it)\n"
                                       for name in unset) + rest
    notes = getattr(recipe, "config_notes", lambda full: [])(args.full)
    if notes:  # what the printed values depend on (IMNN: the fit's mode)
        first, _, rest = text.partition("\n")
        text = f"{first}\n" + "".join(f"# {line}\n" for line in notes) + rest
    print(text, end="")
    return 0


def _input_positions(recipe: Any) -> dict[str, int]:
    """The position of each named input of ``recipe.run`` (``run_inputs``: names, with
    alternatives as ``a|b``; a routine's ``arrays``)."""
    names = getattr(recipe, "run_inputs", None) or ()
    return {alt: k for k, name in enumerate(names) for alt in str(name).split("|")}


def _in_input_order(recipe: Any, path: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """An .npz whose arrays are named after the recipe's inputs is passed in the recipe's
    order, not the archive's (user13: np.savez(f, data_B=B, data_A=A) gave DII its inputs
    swapped, silently); names that are partly inputs are refused."""
    keys = getattr(arrays, "keys", None)
    if not keys:
        return arrays
    positions = _input_positions(recipe)
    known = [k for k in keys if k in positions]
    if not known:
        return arrays  # names of one's own: the archive's order, as documented
    if len(known) < len(keys):
        raise ConfigError(
            f"--data {path!r} names {sorted(known)} after {recipe.name}'s inputs but also "
            f"{sorted(set(keys) - set(known))}: name all of its arrays after the inputs "
            f"({', '.join(dict.fromkeys(positions))}) or none (then the archive's order counts).")
    order = sorted(range(len(keys)), key=lambda i: positions[keys[i]])
    if order != list(range(len(keys))):
        print(f"infoblocks: --data {path}: arrays taken in {recipe.name}'s input order: "
              f"{', '.join(keys[i] for i in order)}", file=sys.stderr)
    return [arrays[i] for i in order]


class _Named(list):
    """The arrays of an .npz, in the archive's order, with their names (``keys``)."""

    keys: list[str] = []


def _load_array(path: str) -> list[np.ndarray]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--data file {path!r} does not exist.")
    if p.suffix not in (".npy", ".npz", ".csv", ".txt"):
        raise ConfigError(f"--data {path!r}: use a .npy, .npz, .csv or .txt file.")
    if p.suffix in (".npy", ".npz"):
        with open(p, "rb") as f:
            head = f.read(6)
        if not head.startswith(b"\x93NUMPY" if p.suffix == ".npy" else b"PK"):
            raise ConfigError(f"--data {path!r} is not a {p.suffix} file (no "
                              f"{'NPY' if p.suffix == '.npy' else 'zip'} header: a text file or "
                              "a truncated copy?); save the array with "
                              f"{'np.save' if p.suffix == '.npy' else 'np.savez'}.")
    try:
        if p.suffix == ".npy":  # memory-mapped: recipes that read rows lazily never load it
            arrays = [np.load(p, allow_pickle=False, mmap_mode="r")]
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as archive:
                arrays = _Named(archive[k] for k in archive.files)
                arrays.keys = list(archive.files)
        else:
            arrays = [np.loadtxt(p, delimiter="," if p.suffix == ".csv" else None, ndmin=2)]
    except ValueError as exc:
        why = ("it holds Python objects (object dtype), which are never unpickled; save a "
               "numeric array" if "allow_pickle" in str(exc) or "Python objects" in str(exc) else
               f"it is not a numeric table ({str(exc).splitlines()[0][:120]})")
        raise ConfigError(f"--data {path!r} cannot be read: {why}.") from None
    except (OSError, EOFError) as exc:
        raise ConfigError(f"--data {path!r} cannot be read: {exc}.") from None
    for a in arrays:
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number)
                                     or np.issubdtype(a.dtype, np.bool_)):
            raise ConfigError(f"--data {path!r} holds a {a.dtype} array; give numbers.")
    return arrays


#: the folder inside ``--out`` that holds the training checkpoint (``--resume`` reads it)
CHECKPOINT_DIR = "checkpoint"


def _launch(args: argparse.Namespace, argv: list[str]) -> int:
    """Run this same command in ``--nproc`` processes under ``torch.distributed.run`` (what a
    user would type as ``torchrun --nproc_per_node=N -m infoblocks.recipes.cli run ...``)."""
    if isinstance(args.nproc, int) and args.nproc < 1:
        raise ConfigError(f"--nproc must be a positive number of processes, got {args.nproc}.")
    inner = [a for a in argv if a != f"--nproc={args.nproc}"]
    if "--nproc" in inner:
        at = inner.index("--nproc")
        del inner[at:at + 2]
    if args.max_restarts > 0 and not args.resume:
        # restarted workers must continue from the checkpoint, not from a stale one
        shutil.rmtree(Path(args.out) / CHECKPOINT_DIR, ignore_errors=True)
        inner.append("--resume")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={args.nproc}", f"--max-restarts={args.max_restarts}",
               "-m", "infoblocks.recipes.cli", *inner]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, preexec_fn=die_with_parent)
    report = _pass_stderr(process)
    code = process.wait()
    if code != 0 and report:
        print(_failure_line(args, code, report), file=sys.stderr)
    elif report:  # (a restart that then succeeded: the launcher's lines, as they came)
        sys.stderr.write("".join(report))
    return code


#: the launcher's own log lines (torch.distributed.elastic, glog format: "E1201 19:56:46.715 ...")
_LAUNCHER_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ .*torch/distributed/")
#: the launcher's line after which all it writes is its own report (traceback, ChildFailedError)
_LAUNCHER_FAILED = re.compile(r"failed \(exitcode: -?\d+\)")
#: where ``infoblocks run --nproc N`` writes torch's launcher report of a failed run (in --out)
TORCHRUN_REPORT = "torchrun_error.log"


def _pass_stderr(process: subprocess.Popen) -> list[str]:
    """Copy the workers' stderr through as it comes (a progress bar's ``\\r`` updates too),
    each ``infoblocks: error:`` line once (every rank raises the same), and keep back the
    launcher's own lines: its log lines and, after it reports a failed worker, its ~40-line
    traceback and ChildFailedError table, which buried the one-line error (author26-6).
    Returns those lines."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    report: list[str] = []
    errors: set[str] = set()
    failed = False
    pending = ""
    fd = process.stderr.fileno()
    while True:
        chunk = os.read(fd, 65536)
        pending += decoder.decode(chunk, final=not chunk)
        pieces = re.split(r"(?<=[\r\n])", pending)
        pending = "" if not chunk else pieces.pop()  # (a piece not yet ended: wait)
        for piece in pieces:
            if not piece:
                continue
            log = _LAUNCHER_LOG.match(piece)
            if log or (failed and not piece.startswith("infoblocks: error:")):
                report.append(piece)
                # (a later log line: the launcher goes on, restarting the workers)
                failed = bool(_LAUNCHER_FAILED.search(piece)) if log else failed
                continue
            if piece.startswith("infoblocks: error:"):
                if piece in errors:
                    continue
                errors.add(piece)
            sys.stderr.write(piece)
            sys.stderr.flush()
        if not chunk:
            return report


def _failure_line(args: argparse.Namespace, code: int, report: list[str]) -> str:
    """One line for a failed ``--nproc`` run, naming where torch's report went."""
    path = Path(args.out) / TORCHRUN_REPORT
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(report))
        where = f"torch's launcher report is in {path}"
    except OSError:
        where = "torch's launcher report could not be written to --out"
    return (f"infoblocks: error: the run in {args.nproc} processes failed (exit code {code}); "
            f"the workers' error is above, {where}.")


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies.  torchrun's agent starts its
    workers in sessions of their own, so a `kill -9` of `infoblocks run --nproc N` (or of its
    process group) left the workers training and writing the checkpoint that a `--resume`
    then raced with; the agent (a child of the command) and each worker (a child of the
    agent) set this, so the whole tree goes with the command.  Elsewhere: nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl: the old behaviour
        pass


def _fit_options(recipe: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``checkpoint`` / ``resume`` for ``recipe.run`` when it takes them (a plugin recipe
    written before they existed runs without; asking it to resume is an error)."""
    accepts = inspect.signature(recipe.run).parameters
    if any(p.kind is p.VAR_KEYWORD for p in accepts.values()) or "checkpoint" in accepts:
        return {"checkpoint": Path(args.out) / CHECKPOINT_DIR, "resume": args.resume}
    if args.resume:
        raise ConfigError(f"Recipe {recipe.name!r} cannot resume: its run() takes no "
                          "checkpoint options; run it without --resume.")
    return {}


def _make_dir(out_dir: Path) -> None:
    """``out_dir`` and its parents, or a ConfigError naming ``--out`` (a file on the way, no
    permission) instead of the OSError's traceback."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {str(out_dir)!r} cannot be made a directory "
                          f"({exc.strerror or exc}); give a directory path you can write.") from None


def cmd_run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be a positive number of processes, got {args.nproc}.")
    if args.max_restarts < 0:
        raise ConfigError(f"--max-restarts must be 0 or more, got {args.max_restarts}.")
    from infoblocks.blocks.distributed import quiet_other_ranks

    launching = args.nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1
    quiet_other_ranks()  # a torchrun worker of rank > 0 leaves infoblocks' warnings to rank 0
    with warnings.catch_warnings():
        if launching:  # read here to fail before the launch; rank 0 shows what it warns
            warnings.simplefilter("ignore")
        config = read_toml(args.config)
        recipe = recipe_from_dict(config)
        arrays = [a for path in args.data
                  for a in _in_input_order(recipe, path, _load_array(path))]
    if not arrays and not getattr(recipe, "draws_own_simulations", lambda: False)():
        raise ConfigError(f"infoblocks run {recipe.name}: give its input with --data FILE "
                          "(.npy, .npz, .csv or .txt).")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {args.out!r} is a file; give a directory for the results.")
    if launching:
        return _launch(args, list(sys.argv[1:] if argv is None else argv))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and "TORCHELASTIC_RUN_ID" in os.environ:
        die_with_parent()  # a torchrun worker: it goes when the agent goes
    main = int(os.environ.get("RANK", "0")) == 0
    _make_dir(out_dir)
    options = _fit_options(recipe, args)
    # under torchrun every rank trains; rank 0 writes the results (the others a scratch folder)
    with tempfile.TemporaryDirectory() if not main else contextlib.nullcontext() as scratch:
        summary = recipe.run(arrays, out_dir if main else Path(scratch), **options)
    if not main:
        return 0
    summary = {**summary, "world_size": world}
    recipe.to_toml(out_dir / "recipe.toml", full=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _print_result(summary)
    return 0



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infoblocks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="list or run the embedded demos")
    demo.add_argument("name", nargs="?", help="demo to run ('all' runs every demo)")
    demo.add_argument("--out", default="infoblocks-demo", help="output folder (figure, results)")
    demo.add_argument("--quick", action="store_true", help="short training budget")
    demo.set_defaults(func=cmd_demo)
    lst = sub.add_parser("list", help="list registered blocks")
    lst.add_argument("kind", nargs="?", choices=BLOCK_KINDS)
    lst.set_defaults(func=cmd_list)
    cfg = sub.add_parser("config", help="print a recipe's default config as TOML (or a "
                                        "config file's, expanded with --full)")
    cfg.add_argument("recipe", help="a recipe's name, or a TOML config file (FILE.toml)")
    cfg.add_argument("--full", action="store_true",
                     help="the expanded routine: every block of every slot, by name")
    cfg.add_argument("--preset", help="the configuration of a named preset")
    cfg.set_defaults(func=cmd_config)
    run = sub.add_parser("run", help="fit the recipe described by a TOML config")
    run.add_argument("config", help="TOML file with `recipe = NAME` and its hyperparameters")
    run.add_argument("--data", action="append", default=[],
                     help="input array (.npy/.npz/.csv); repeat for recipes with two inputs "
                          "(IMNN: none when its samplers draw their own simulations)")
    run.add_argument("--out", required=True, help="output folder (model, summary.json)")
    run.add_argument("--nproc", type=int, default=1,
                     help="processes to train in (torch.distributed.run, gloo on CPU / nccl on "
                          "CUDA); each takes a shard of every batch")
    run.add_argument("--max-restarts", type=int, default=0,
                     help="with --nproc: restarts of failed workers (they resume from the "
                          "checkpoint)")
    run.add_argument("--resume", action="store_true",
                     help="continue from the checkpoint in OUT/checkpoint (after a kill)")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.func is cmd_run:
            return cmd_run(args, argv)
        return args.func(args)
    except InfoblocksError as exc:
        print(f"infoblocks: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
