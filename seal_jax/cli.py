"""The one entry point every command-line tool uses: absl flags, then `main`, without library chatter.

JAX logs backend probing ("Unable to initialize backend 'tpu'") at INFO through absl's handler; a person at
a terminal wants our progress bars and results, so absl's threshold is WARNING unless `--verbosity` says
otherwise. Our own loggers (`seal_jax.*`) stay at INFO.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional


def run(main: Callable, define_flags: Optional[Callable] = None) -> None:
    from absl import app, flags
    from absl import logging as absl_logging
    if define_flags is not None:
        define_flags()

    def quiet_main(argv):
        if not flags.FLAGS["verbosity"].present:
            absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("seal_jax").setLevel(logging.INFO)
        return main(argv)

    app.run(quiet_main)
