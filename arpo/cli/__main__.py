"""``python -m arpo.cli``: the ``arpo`` command (what torchrun and the deepspeed launcher run)."""
import sys

from . import main

sys.exit(main())
