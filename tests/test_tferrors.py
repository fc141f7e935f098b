"""Errors raised by Python code inside tf.data come out as the project's own errors."""

import pytest

from dreamer_core import tferrors
from dreamer_core.replay import Replay, ReplayError
from tests.test_replay import make_episode


def test_replay_error_inside_the_generator_comes_out_as_itself(tmp_path):
    replay = Replay(tmp_path)
    replay.add(make_episode(3))
    batches = tferrors.Batches(replay.dataset(batch=2, length=10, oversample_ends=False))
    with pytest.raises(ReplayError) as info:
        next(batches)
    message = str(info.value)
    assert message.startswith(f'No episode in replay {tmp_path} has more than 10 rows')
    assert message.endswith('Lower dataset.length or collect longer episodes.')
    assert '\n' not in message and 'Traceback' not in message


def test_other_errors_inside_tf_data_keep_their_traceback():
    import tensorflow as tf

    import dreamer_core  # noqa: F401  (sets the Keras flavour before TensorFlow loads)

    def broken():
        yield 1.0
        raise KeyError('a bug')

    dataset = tf.data.Dataset.from_generator(broken, output_signature=tf.TensorSpec((), tf.float32))
    batches = tferrors.Batches(dataset)
    assert float(next(batches)) == 1.0
    with pytest.raises(tf.errors.OpError, match="KeyError: .a bug."):
        next(batches)
