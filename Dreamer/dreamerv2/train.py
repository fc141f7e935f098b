"""Train Dreamer: `python dreamerv2/train.py --logdir ... --task ... --configs ...`."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # the repository root

from dreamer_core import train  # noqa: E402

if __name__ == '__main__':
    sys.exit(train.main(sys.argv[1:], 'dreamer'))
