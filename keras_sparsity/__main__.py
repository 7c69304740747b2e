"""Runs the command line: `python -m keras_sparsity report PATH`."""

import sys

from keras_sparsity.cli import main

if __name__ == "__main__":
    sys.exit(main())
