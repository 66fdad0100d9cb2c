"""``python -m streams.cli``: what ``accelerate launch``, ``torchrun`` and the worker's training
child process run."""

import sys

from streams.cli import main

sys.exit(main())
