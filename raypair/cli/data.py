"""``raypair data prepare NAME --from DIR``: one of the seeds' datasets from its official archives
into ``<out>/<NAME>/`` (``raypair/data/prepare/``); ``raypair data standin NAME``: a tiny generated
dataset in the same layout, for the quick profiles of the large-scale files. Neither downloads."""
from __future__ import annotations

import argparse

from raypair.config import ConfigError


def cmd_data(args: argparse.Namespace) -> int:
    from raypair.data.prepare import PREPARERS, Options, prepare

    opts = None
    if args.action == "standin":
        from raypair.data.prepare.standin import standin

        folder, wrote = standin(args.name, args.out, classes=args.classes, train=args.train, test=args.test)
    else:
        if args.src is None:
            raise ConfigError("--from", f"required: the folder holding the archives of {args.name} "
                                        "(raypair downloads nothing)")
        if args.name not in PREPARERS:
            raise ConfigError("NAME", f"no such dataset (have: {', '.join(PREPARERS)})", args.name)
        opts = Options(args.max_size, args.quality, args.shard_mb, args.verify, args.mini_split, args.split_seed)
        folder, wrote = prepare(args.name, args.src, args.out, opts)
    from raypair.data.prepare import done

    if not wrote:
        print(f"{folder} is already prepared: nothing to do (remove the folder to prepare it again)"
              + _differs(done(folder).get("options", {}), opts))
        return 0

    splits = ", ".join(f"{n} {s}" for s, n in done(folder)["splits"].items())
    print(f"wrote {folder}: {done(folder)['classes']} classes; {splits}; use it with data.name={args.name} "
          f"and RAYPAIR_DATA={folder.parent}")
    return 0


def _differs(recorded: dict, opts: object) -> str:
    """``; it was prepared with --max-size 320, not 256`` where the asked options differ."""
    from dataclasses import asdict, is_dataclass

    if not is_dataclass(opts):
        return ""
    diff = [f"--{k.replace('_', '-')} {recorded.get(k)}, not {v}" for k, v in asdict(opts).items()
            if k in recorded and recorded[k] != v]
    return f"; it was prepared with {'; '.join(diff)}" if diff else ""
