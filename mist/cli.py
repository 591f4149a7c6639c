"""The ``mist`` command: generate, train, evaluate, estimate, serve.

Each subcommand parses its flags and calls the package that does the work; user errors are printed as
one line (``error: ...``) with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]


class UserError(Exception):
    """An error in the user's input, printed without a traceback."""


def _generate(args: argparse.Namespace) -> int:
    from metadata_gen.config import load_config
    from metadata_gen.shards import ShardReader, write_shards
    from metadata_gen.summary import family_table, mi_histogram

    config = load_config(args.config)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mist", description="Amortized mutual-information estimation.")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from metadata_gen.config import ConfigError

    try:
        return args.handler(args)
    except (UserError, ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
