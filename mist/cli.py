"""The ``mist`` command: generate, train, evaluate, estimate, serve.

Each subcommand parses its flags and calls the package that does the work; user errors are printed as
one line (``error: ...``) with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


class UserError(Exception):
    """An error in the user's input, printed without a traceback."""


def _generate(args: argparse.Namespace) -> int:
    from metadata_gen.config import load_config
    from metadata_gen.shards import ShardReader, write_shards
    from metadata_gen.summary import family_table, mi_histogram
    from model.assets import resolve

    config = load_config(resolve(args.config))
    if args.tasks < 1:
        raise UserError("--tasks must be >= 1")
    if args.num_shards < 1 or not 0 <= args.shard_index < args.num_shards:
        raise UserError("need --num-shards >= 1 and 0 <= --shard-index < --num-shards")
    manifest = write_shards(
        config,
        args.tasks,
        args.out,
        seed=args.seed,
        workers=args.workers,
        shard_index=args.shard_index,
        num_shards=args.num_shards,
    )
    reader = ShardReader(args.out)
    metas = [reader.meta(i) for i in range(len(reader))]
    print(f"wrote {manifest}")
    print(family_table(m["family"] for m in metas))
    print(mi_histogram(m["mi"] for m in metas))
    return 0


def _train(args: argparse.Namespace) -> int:
    from model.training.train import load_train_config, train

    cfg = load_train_config(args.config, steps=args.steps, out_dir=args.out_dir)
    path = train(cfg, resume=args.resume, init=args.init, progress=not args.quiet)
    print(f"checkpoint: {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from model.checkpoint import export_for_serving
    from model.estimator import Estimator, default_checkpoint_path
    from model.training.evaluate import (
        SUITES,
        checkpoint_summary,
        comparison_table,
        evaluate_many,
        markdown_table,
        quality_checks,
        quality_table,
        write_reports,
    )

    if args.tasks_per_bucket < 1:
        raise UserError("--tasks-per-bucket must be >= 1")
    if args.check_tasks < 0:
        raise UserError("--check-tasks must be >= 0 (0 skips the quality checks)")
    if args.suite not in (*SUITES, "textbook", "all") and not Path(args.suite).is_file():
        raise UserError(f"--suite {args.suite!r}: use held-in, held-out, textbook, all, or a meta-distribution file")
    est = Estimator.load(args.checkpoint)
    models = {"checkpoint": est}
    if args.compare:
        models["compare"] = Estimator.load(args.compare)
    suites = [*SUITES, "textbook"] if args.suite == "all" else [args.suite]
    results = [evaluate_many(models, s, args.tasks_per_bucket, progress=not args.quiet) for s in suites]
    reports = [r["checkpoint"] for r in results]
    if args.compare:
        for r in results:
            print(comparison_table(r), end="\n\n")
    checks = quality_checks(est, args.check_tasks, progress=not args.quiet) if args.check_tasks else None
    for r in reports:
        print(markdown_table(r), end="\n\n")
    if checks:
        print(quality_table(checks), end="\n\n")
    print(f"reports: {write_reports(reports, args.out, checks)}")
    if args.ship:
        source = args.checkpoint or default_checkpoint_path()
        export_for_serving(source, args.ship, evaluation=checkpoint_summary(reports, checks))
        print(f"shipped (no optimizer state, evaluation inside): {args.ship}")
    return 0


def _column_indices(header: list[str] | None, width: int, spec: str, path: str) -> list[int]:
    """The columns ``spec`` names: comma-separated indices from 0, or header names."""
    picked = []
    for item in (s.strip() for s in spec.split(",")):
        if item.isdigit():
            picked.append(int(item))
        elif header is not None and item in header:
            picked.append(header.index(item))
        else:
            known = f"; columns are {', '.join(header)}" if header else " (no header row to name columns)"
            raise UserError(f"{path}: no column {item!r}{known}")
    if max(picked) >= width:
        raise UserError(f"{path}: column {max(picked)} asked for, but the file has {width} columns")
    return picked


def _load_table(path: str):
    """A 2-D array and its column names (a CSV's header row, else None) from ``.npy``, a one-array ``.npz`` or
    ``.csv``; errors name the file."""
    import numpy as np

    try:
        if path.endswith(".npy"):
            return np.atleast_2d(np.load(path, allow_pickle=False).T).T, None
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                if len(z.files) != 1:
                    raise UserError(
                        f"{path}: holds {z.files}; pass one .npz with x and y as DATA, or one array per file"
                    )
                return np.atleast_2d(z[z.files[0]].T).T, None
        if path.endswith(".csv"):
            try:
                return np.loadtxt(path, delimiter=",", ndmin=2), None
            except ValueError:  # a header row
                with open(path) as f:
                    header = [h.strip() for h in f.readline().split(",")]
                return np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1), header
    except (OSError, ValueError) as err:
        raise UserError(
            f"{path}: {err}; expected numbers, one sample per row (a CSV may have one header row)"
        ) from None
    raise UserError(f"{path}: unsupported file type (use .npz with x and y, or .npy / .csv per side)")


def _load_array(path: str, cols: str | None = None):
    """A 2-D array from :func:`_load_table`; ``cols`` picks columns by index or header name."""
    table, header = _load_table(path)
    return table if cols is None else table[:, _column_indices(header, table.shape[1], cols, path)]


def _screen(args: argparse.Namespace) -> int:
    import json

    from model.estimator import Estimator
    from model.screening import ranked
    from model.validation import InputError, parse_discrete_features, parse_discreteness

    table, header = _load_table(args.table)
    names = header or [str(j) for j in range(table.shape[1])]
    target = _column_indices(header, table.shape[1], args.target, args.table)
    features = [j for j in range(table.shape[1]) if j not in target]
    try:
        discrete = {"discrete_features": parse_discrete_features(args.discrete_features),
                    "discrete_target": parse_discreteness(args.discrete_target, "--discrete-target")}  # fmt: skip
        answers = Estimator.load(args.checkpoint).screen(table[:, features], table[:, target], method=args.method,
                                                         columns=[names[j] for j in features],
                                                         between=_progress_bar(args, "screen"), **discrete)  # fmt: skip
    except InputError as err:
        raise UserError(str(err)) from None
    order = ranked(answers)
    if args.json:
        print(json.dumps({name: a.to_dict() for name, a in order}))
        return 0
    print(f"I(column; {', '.join(names[j] for j in target)}) in nats, ranked ({args.method}, n={len(table)})")
    width = max(len(name) for name, _ in order)
    for name, a in order:
        interval = f"[{a.interval_90[0]:.3f}, {a.interval_90[1]:.3f}]" if a.interval_90 else ""
        print(f"  {name:{width}s}  {a.mi_nats:7.3f}  {interval}  {'' if a.method == args.method else a.method}")
    tied = [name for name, a in order if a.warnings]
    if tied:
        print(f"warning: tied values in columns read as continuous: {', '.join(tied)} (ties broken by noise); "
              "declare discrete ones with --discrete-features", file=sys.stderr)  # fmt: skip
    return 0


def _pairwise(args: argparse.Namespace) -> int:
    import numpy as np

    from model.estimator import Estimator
    from model.validation import InputError, parse_discrete_features

    table, header = _load_table(args.table)
    try:
        result = Estimator.load(args.checkpoint).pairwise(table, method=args.method, columns=header,
                                                          between=_progress_bar(args, "pairwise"),
                                                          discrete_features=parse_discrete_features(
                                                              args.discrete_features))  # fmt: skip
    except InputError as err:
        raise UserError(str(err)) from None
    head = ",".join(["", *result.names])
    outputs = {"": result.mi_nats, "_lower": result.lower, "_upper": result.upper}
    for suffix, matrix in outputs.items():
        rows = zip(result.names, matrix, strict=True)
        lines = [head] + [",".join([name, *(f"{v:.6g}" for v in row)]) for name, row in rows]
        if args.out:
            out = Path(args.out)
            out.with_name(out.stem + suffix + out.suffix).write_text("\n".join(lines) + "\n")
        elif not suffix:
            print("\n".join(lines))
    if args.out:
        print(f"wrote {args.out} (medians, nats) and its _lower / _upper 90 % bounds; diagonal NaN")
    if args.plot:
        _heat_map(result, args.plot)
        print(f"wrote {args.plot} (heat map of the medians)")
    off = ~np.eye(len(result.names), dtype=bool)
    print(f"{off.sum() // 2} pairs, median MI {np.nanmedian(result.mi_nats[off]):.3f} nats")
    for warning in result.warnings:
        print(f"warning: {warning} (--discrete-features)", file=sys.stderr)
    return 0


def _progress_bar(args: argparse.Namespace, what: str):
    """A ``between`` callback drawing a tqdm bar on stderr (none with --quiet, or where tqdm is not installed:
    the serving image)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    if args.quiet:
        return None
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        bar = bar or tqdm(total=total, desc=what, unit="pair", leave=False)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return update


def _heat_map(result, path: str) -> None:
    """The matrix of medians as a labelled heat map (matplotlib, from the train extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'mist-estimator[train]'") from None
    p = len(result.names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.35 * p, 1.0 + 0.35 * p))
    image = ax.imshow(result.mi_nats, cmap="viridis", vmin=0.0)
    ticks = range(p) if p <= 60 else []
    ax.set_xticks(ticks, [result.names[i] for i in ticks], rotation=90, fontsize=7)
    ax.set_yticks(ticks, [result.names[i] for i in ticks], fontsize=7)
    fig.colorbar(image, ax=ax, label="I (nats), median")
    ax.set_title("pairwise mutual information")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _read_arrays(args: argparse.Namespace):
    """``(x, y, z)`` from DATA (an .npz with x, y and optionally z) or from --x, --y (and --z); z may be None."""
    z_file = getattr(args, "z", None)
    if args.data and (args.x or args.y):
        raise UserError("give either DATA (.npz with x and y) or --x and --y, not both")
    if args.data:
        from model.npz import read_npz
        from model.validation import InputError, Limits

        try:
            with open(args.data, "rb") as f:
                x, y, z = read_npz(f.read(), Limits())
        except OSError as err:
            raise UserError(f"{args.data}: {err.strerror}") from None
        except InputError as err:
            raise UserError(f"{args.data}: {err}") from None
        if z is not None and z_file:
            raise UserError(f"{args.data} holds z already; drop --z")
        return x, y, (_load_array(z_file, None) if z_file else z)
    if not (args.x and args.y):
        raise UserError("give DATA (.npz with arrays x and y, as POST /estimate/npz takes) or both --x and --y")
    return (
        _load_array(args.x, args.x_cols),
        _load_array(args.y, args.y_cols),
        (_load_array(z_file, None) if z_file else None),
    )


def _read_pair(args: argparse.Namespace):
    x, y, z = _read_arrays(args)
    if z is not None:
        raise UserError("this command estimates I(X; Y): z does not apply")
    return x, y


def _adapt(args: argparse.Namespace) -> int:
    from model.training.adapt import adapt

    for flag in ("minutes", "steps", "flow_epochs", "eval_tasks"):
        if getattr(args, flag) <= 0:
            raise UserError(f"--{flag.replace('_', '-')} must be > 0")
    if args.data:
        x, y = _read_pair(argparse.Namespace(data=args.data, x=None, y=None))
    else:
        x, y = _read_pair(argparse.Namespace(data=None, x=args.x, y=args.y))
    summary = adapt(x, y, args.out, args.base_meta, args.init, args.minutes, args.steps, args.flow_epochs,
                    args.eval_tasks, progress=not args.quiet)  # fmt: skip
    for side, fit in summary["flows"].items():
        if isinstance(fit, dict):
            print(f"flow {side}: held-out NLL {fit['heldout_nll_flow']:.3f} nats/dim vs Gaussian "
                  f"{fit['heldout_nll_gaussian']:.3f} ({fit['epochs']} epochs)")  # fmt: skip
        else:
            print(f"flow {side}: {fit}")
    print(summary["table"])
    print(f"adapted checkpoint: {summary['checkpoint']}  (serve it: MIST_CHECKPOINTS=lab={summary['checkpoint']})")
    return 0


def _estimate(args: argparse.Namespace) -> int:
    import json

    from model.estimator import Estimator, estimate_baseline, estimate_conditional_baseline
    from model.validation import InputError, parse_discreteness, parse_levels

    x, y, z = _read_arrays(args)
    try:
        levels = parse_levels(args.quantiles)
        sides = {f"discrete_{s}": parse_discreteness(getattr(args, f"discrete_{s}"), f"--discrete-{s}") for s in "xy"}
        if any(sides.values()) and args.k is not None:
            raise UserError("--discrete-x/--discrete-y do not apply with --k")
        discrete_z = parse_discreteness(args.discrete_z, "--discrete-z")
        if z is None and discrete_z != "auto":
            raise UserError("--discrete-z applies with --z")
        if any(sides.values()):  # the discrete estimators answer whatever the method (with z: by its classes)
            net = Estimator.load(args.checkpoint)
            est = (net.estimate(x, y, levels, args.method, **sides) if z is None
                   else net.conditional(x, y, z, levels, args.method, discrete_z=discrete_z, **sides))  # fmt: skip
        elif args.method == "mist":  # only the network needs torch and a checkpoint
            if args.k is not None:
                raise UserError("--k is KSG's neighbour count; use it with --method ksg")
            net = Estimator.load(args.checkpoint)
            est = (net.estimate(x, y, quantiles=levels) if z is None
                   else net.conditional(x, y, z, quantiles=levels, discrete_z=discrete_z))  # fmt: skip
        else:
            if levels is not None:
                raise UserError(f"--quantiles needs --method mist: {args.method} gives a point estimate")
            if z is None:
                est = estimate_baseline(x, y, args.method, k=args.k)
            elif args.k is not None:
                raise UserError("--k is KSG's neighbour count; it does not apply with --z")
            else:
                est = estimate_conditional_baseline(x, y, z, args.method)
    except InputError as err:
        raise UserError(str(err)) from None
    if args.json:
        print(json.dumps(est.to_dict()))
    else:
        what = "I(X;Y)" if z is None else "I(X;Y|Z)"
        line = f"{what} = {est.mi_nats:.4f} nats ({est.mi_bits:.4f} bits)"
        line += f"  [{args.method}, n={est.n}, dx={est.dx}, dy={est.dy}" + (f", dz={est.dz}]" if z is not None else "]")
        if est.interval_90:
            line += f"\n90% interval: [{est.interval_90[0]:.4f}, {est.interval_90[1]:.4f}] nats"
        if levels is not None:
            line += "\nquantiles: " + ", ".join(f"{q}: {v:.4f}" for q, v in est.quantiles.items())
        print(line)
        for warning in est.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def _check_calibration_args(args: argparse.Namespace) -> None:
    from model.assets import resolve

    if args.tasks < 20:
        raise UserError("--tasks must be >= 20 (the 5 % and 95 % offsets need at least that many)")
    if not resolve(args.checkpoint).is_file():
        raise UserError(f"checkpoint not found: {args.checkpoint}")


def _calibrate(args: argparse.Namespace) -> int:
    from model.training.calibrate import calibrate_checkpoint_intervals

    _check_calibration_args(args)
    report = calibrate_checkpoint_intervals(args.checkpoint, args.tasks, progress=not args.quiet)["report"]
    print(f"calibrated {args.checkpoint}: 90 % coverage on the calibration tasks {report['coverage_90_before']:.2f}"
          f" before, {report['coverage_90_after']:.2f} after")  # fmt: skip
    for group, r in report["groups"].items():
        left_out = f"  left out {r['leave_group_out']:.2f}" if "leave_group_out" in r else ""
        print(f"  {group:<28} {r['tasks']:>4} tasks  before {r['before']:.2f}{left_out}")
    return 0


def _calibrate_cmi(args: argparse.Namespace) -> int:
    from model.training.calibrate import calibrate_checkpoint

    _check_calibration_args(args)
    out = calibrate_checkpoint(args.checkpoint, args.tasks, progress=not args.quiet)
    print(f"wrote {out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import functools
    import os

    import uvicorn

    from server.connection import HeadDeadlineH11Protocol
    from server.settings import Settings

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers),
                                   ("checkpoint", args.checkpoint)) if v is not None}  # fmt: skip
    settings = Settings(**overrides)
    if not os.path.isfile(settings.checkpoint):
        raise UserError(f"checkpoint not found: {settings.checkpoint}")
    os.environ["MIST_CHECKPOINT"] = settings.checkpoint  # worker processes build their app from the env
    uvicorn.run(
        "server.main:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        limit_concurrency=settings.max_connections,
        http=functools.partial(HeadDeadlineH11Protocol, head_timeout_s=settings.head_timeout_s),
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from model.assets import DEFAULT_CHECKPOINT, DEFAULT_META
    from model.conformal import CMI_CALIBRATION_TASKS, INTERVAL_TASKS_PER_SOURCE
    from model.package_version import package_version
    from model.validation import DISCRETENESS, METHODS

    parser = argparse.ArgumentParser(prog="mist", description="Amortized mutual-information estimation.")
    parser.add_argument("--version", action="version", version=f"mist {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a meta-dataset of tasks with known MI as shards")
    g.add_argument("--config", required=True, help="meta-distribution config (TOML or JSON)")
    g.add_argument("--tasks", type=int, required=True, help="number of tasks in the whole meta-dataset")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--workers", type=int, default=1, help="processes on this machine")
    g.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    g.add_argument("--shard-index", type=int, default=0, help="this machine's index among --num-shards")
    g.add_argument("--num-shards", type=int, default=1, help="machines sharing the work")
    g.set_defaults(handler=_generate)

    t = sub.add_parser("train", help="train the estimator on a meta-distribution (torchrun for DDP)")
    t.add_argument("--config", required=True, help="training config (TOML or JSON)")
    t.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    t.add_argument("--init", default=None, help="fine-tune: start from this checkpoint's weights")
    t.add_argument("--steps", type=int, default=None, help="override optim.steps")
    t.add_argument("--out-dir", default=None, help="override out_dir")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(handler=_train)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint on held-in / held-out suites against baselines")
    e.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint")
    e.add_argument("--suite", default="all", help="held-in, held-out, textbook, all, or a meta-distribution file")
    e.add_argument("--compare", default=None, help="a second checkpoint, evaluated side by side on the same arrays")
    e.add_argument("--tasks-per-bucket", type=int, default=30, help="tasks per n bucket and suite")
    e.add_argument("--check-tasks", type=int, default=40, help="tasks per quality check (0: skip the checks)")
    e.add_argument("--out", default="runs/evaluation", help="directory for the reports")
    e.add_argument("--ship", default=None, help="also export the checkpoint here with this evaluation inside")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(handler=_evaluate)

    a = sub.add_parser("adapt", help="fit flows to your data, fine-tune on tasks shaped like it, compare")
    a.add_argument("data", nargs="?", help=".npz holding arrays x and y")
    a.add_argument("--x", help="X alone: .npy, .csv or a one-array .npz")
    a.add_argument("--y", help="Y alone")
    a.add_argument("--out", required=True, help="directory for flows, configs, checkpoint and evaluation")
    a.add_argument(
        "--base-meta", default=DEFAULT_META, help="meta-distribution drawn before the flows (default: shipped)"
    )
    a.add_argument("--init", default=DEFAULT_CHECKPOINT, help="checkpoint to fine-tune (default: the shipped one)")
    a.add_argument("--minutes", type=float, default=10.0, help="fine-tuning budget (wall clock)")
    a.add_argument("--steps", type=int, default=100_000, help="fine-tuning step cap")
    a.add_argument("--flow-epochs", type=int, default=200, help="cap on flow epochs (early stopping decides)")
    a.add_argument("--eval-tasks", type=int, default=20, help="tasks per n bucket of the comparison")
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    a.set_defaults(handler=_adapt)

    s = sub.add_parser("estimate", help="estimate I(X;Y), or I(X;Y|Z) with --z, for arrays in files (rows = samples)")
    s.add_argument(
        "data", nargs="?", help=".npz holding arrays x and y, and z to condition on (the body POST /estimate/npz takes)"
    )
    s.add_argument("--x", help="X alone: .npy, .csv (header row allowed) or a one-array .npz")
    s.add_argument("--y", help="Y alone, same formats (may be the same file as --x, with other columns)")
    s.add_argument(
        "--x-cols", default=None, help="columns of --x to use: indices from 0 or CSV header names, comma-separated"
    )
    s.add_argument("--y-cols", default=None, help="columns of --y to use, like --x-cols")
    s.add_argument(
        "--z",
        default=None,
        help="Z to condition on, same formats: estimates I(X;Y|Z) (--method mist, frenzel_pompe or gaussian_copula)",
    )
    s.add_argument("--checkpoint", default=None, help="a checkpoint file (default: the shipped one)")
    s.add_argument("--method", default="mist", choices=METHODS, help="mist (with an interval) or a baseline")
    s.add_argument("--quantiles", default=None, help="levels to report, comma-separated (mist only), e.g. 0.1,0.5,0.9")
    s.add_argument("--k", type=int, default=None, help="KSG's neighbour count (--method ksg; default 5)")
    s.add_argument("--json", action="store_true", help="one JSON object, the same names as the HTTP answer")
    for side in ("x", "y"):
        s.add_argument(
            f"--discrete-{side}",
            nargs="?",
            const="true",
            default="false",
            choices=tuple(DISCRETENESS),
            help=f"{side.upper()} is discrete (alone: true; auto: integer-valued, at most 32 values, 5 rows per value)",
        )
    s.add_argument(
        "--discrete-z",
        nargs="?",
        const="true",
        default="auto",
        choices=tuple(DISCRETENESS),
        help="with --z: Z is discrete, so I(X;Y|Z) is estimated within each class (default auto, as for --discrete-x; "
        "false: the chain rule)",
    )
    s.set_defaults(handler=_estimate)

    def table_command(name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
        t = sub.add_parser(name, help=help_text)
        t.add_argument("table", help=".csv (header row names the columns), .npy or a one-array .npz")
        t.add_argument("--method", default="mist", choices=METHODS, help="mist (with intervals) or a baseline")
        t.add_argument("--checkpoint", default=None, help="a checkpoint file (default: the shipped one)")
        t.add_argument("--quiet", action="store_true", help="no progress bar")
        t.add_argument(
            "--discrete-features",
            default="auto",
            help="auto (integer-valued, at most 32 values, 5 rows "
            "per value), true, false, or the discrete columns by name or index, comma-separated",
        )
        t.set_defaults(handler=handler)
        return t

    m = table_command("screen", "MI of every column of a table against a target, ranked, with intervals", _screen)
    m.add_argument("--target", required=True, help="target column(s): header names or indices from 0, comma-separated")
    m.add_argument("--json", action="store_true", help="one JSON object of answers by column, ranked")
    m.add_argument("--discrete-target", nargs="?", const="true", default="false", choices=tuple(DISCRETENESS),
                   help="the target is discrete (alone: true)")  # fmt: skip
    w = table_command("pairwise", "the matrix of MI between all pairs of columns of a table, with bounds", _pairwise)
    w.add_argument("--out", default=None, help="write the matrix here as CSV (+ _lower, _upper); else print it")
    w.add_argument("--plot", default=None, help="also draw the medians as a heat map into this image (.png, .svg)")

    a = sub.add_parser("calibrate", help="calibrate a checkpoint's MI intervals on held-in and held-out tasks")
    a.add_argument(
        "--checkpoint", default=DEFAULT_CHECKPOINT, help="the checkpoint; the calibration is written into it"
    )
    a.add_argument("--tasks", type=int, default=INTERVAL_TASKS_PER_SOURCE,
                   help="calibration tasks from each of the two meta-distributions (default %(default)s)")  # fmt: skip
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(handler=_calibrate)

    c = sub.add_parser("calibrate-cmi", help="calibrate a checkpoint's I(X;Y|Z) intervals and CI test on CMI tasks")
    c.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="the checkpoint; writes its .cmi.json beside it")
    c.add_argument("--tasks", type=int, default=CMI_CALIBRATION_TASKS,
                   help="calibration tasks (default %(default)s; the CI test's nulls are ~40 %% of them)")  # fmt: skip
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(handler=_calibrate_cmi)

    v = sub.add_parser("serve", help="serve the HTTP API (settings also from MIST_* environment variables)")
    v.add_argument("--host", default=None, help="interface to listen on (MIST_HOST; default 127.0.0.1)")
    v.add_argument("--port", type=int, default=None, help="port (MIST_PORT; default 8000)")
    v.add_argument("--workers", type=int, default=None, help="server processes (MIST_WORKERS; default 1)")
    v.add_argument("--checkpoint", default=None, help="the default model (MIST_CHECKPOINT; default: the shipped one)")
    v.set_defaults(handler=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from metadata_gen.config import ConfigError
    from model.conditional import CalibrationError
    from model.validation import InputError

    try:
        return args.handler(args)
    # AdaptError is a ConfigError
    except (UserError, ConfigError, FileNotFoundError, InputError, CalibrationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
