"""Train DreamerPro: `python dreamerv2/train.py --logdir ... --task ... --configs ...`."""

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for dreamer_core

from dreamer_core import train  # noqa: E402

if __name__ == '__main__':
    sys.exit(train.main(sys.argv[1:], HERE, 'proto_loss:ProtoLoss', 'dreamer_pro'))
