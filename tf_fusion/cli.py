"""What every `python -m tf_fusion.*` command shares: its `--help` (one sentence saying what it
does, then an example) and its error handling (one `error: ...` line and exit 2, never a
traceback, for the errors a user can fix)."""
from __future__ import annotations

import argparse
import sys

from tfrecords_builder import BuildError, LockHeld, ManifestError, MetadataError

from .config import ConfigError

USER_ERRORS = (ConfigError, ManifestError, MetadataError, LockHeld, BuildError)  # LockHeld: another command uses
# the folder; BuildError: the synthetic cache could not be built (its message names the path and the remedy)


def parser(prog: str, summary: str, *examples: str) -> argparse.ArgumentParser:
    """An argument parser whose help opens with ``summary`` and ends with the examples."""
    epilog = "example:\n" + "\n".join(f"  {e}" for e in examples) if examples else None
    return argparse.ArgumentParser(prog=f"python -m {prog}", description=summary, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_experiment_flags(p: argparse.ArgumentParser) -> None:
    """`--experiment`, `--data`, `--run-dir`, `--set`: how train, tune and study name a config."""
    p.add_argument("--experiment", required=True, help="a name in experiments/ (demo, smoke, paper, ...) or a YAML path")
    p.add_argument("--data", help="tfrecords_builder output folder (sets data.dir)")
    p.add_argument("--run-dir", help="run folder (default runs/<experiment name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, value parsed as YAML, e.g. --set training.epochs=2 (repeatable)")


def overrides(args) -> list[str]:
    """The `--set` list with `--data` added as the key it sets."""
    return list(args.set) + ([f"data.dir={args.data}"] if args.data else [])


def run(action, *more_errors) -> int:
    """Exit status of a command running ``action()``: 0, or 2 after one ``error: ...`` line on
    stderr for a user error (bad config, manifest, data or run folder, a folder another command
    is using; ``more_errors``)."""
    try:
        action()
    except (*USER_ERRORS, *more_errors) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only or full disk: name the path, nothing is lost
        if e.filename is None:
            raise
        print(f"error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    return 0
