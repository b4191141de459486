"""``python -m stepwise.launch <stepwise command line>``: one process of a multi-process (multi-host) run.

Run the same command on every host, with the settings of :func:`stepwise.training.distributed.initialize` in the
environment (``JAX_COORDINATOR_ADDRESS=host0:port``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``)::

    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 python -m stepwise.launch run stepwise_deep

Every process runs the whole command (the training steps are collective; the analysis after training is repeated
on each process); process 0 writes the run directory, the others write theirs (``--out``) into a temporary
directory deleted at exit. Without those variables this is ``stepwise`` itself.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

WRITING_COMMANDS = ("run", "verify")


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the program itself: as `stepwise` does, before JAX starts its threads
        from stepwise._memory import reuse_freed_memory

        reuse_freed_memory()
    argv = sys.argv[1:] if argv is None else list(argv)
    from stepwise.training import distributed

    multi = distributed.initialize()  # before any other JAX call
    from stepwise import cli

    if multi and (not argv or argv[0] not in WRITING_COMMANDS):
        raise ValueError(f"across processes only `stepwise {'` and `stepwise '.join(WRITING_COMMANDS)}` are "
                         f"supported (got {' '.join(argv[:1]) or 'no command'})")
    if not multi or distributed.is_main_process():
        return cli.main(argv)
    import jax

    with tempfile.TemporaryDirectory(prefix=f"stepwise-process{jax.process_index()}-") as tmp:
        return cli.main([*argv, "--out", str(Path(tmp) / "run"), "--secondary-process"])  # the last --out counts


if __name__ == "__main__":
    sys.exit(main())
