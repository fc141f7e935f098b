"""The project's own errors, back out of TensorFlow.

Python code that TensorFlow runs for us, such as the replay generator inside tf.data, cannot
raise through it: TensorFlow turns a ReplayError into an InvalidArgumentError whose message holds
the original class name, message and a traceback. `Batches` wraps a dataset iterator and raises
the original error again, so the user sees the project's one-line message; any other TensorFlow
error (a bug) keeps its traceback.
"""

import re

from dreamer_core.replay import ReplayError

CARRIED = (ReplayError,)


def carried_error(error, classes=CARRIED):
    """The project error a tf.errors.OpError carries, rebuilt as its own class, or None."""
    by_name = {cls.__name__: cls for cls in classes}
    match = re.search(rf'\b({"|".join(by_name)}): (.*)', getattr(error, 'message', ''))
    return by_name[match.group(1)](match.group(2).strip()) if match else None


class Batches:
    """An iterator over a tf.data.Dataset whose errors from Python code come out as themselves."""

    def __init__(self, dataset):
        self._iterator = iter(dataset)
        self.used = 0  # batches handed out (the replay's `rng_state(used)` follows them)

    def __iter__(self):
        return self

    def __next__(self):
        import tensorflow as tf

        try:
            batch = next(self._iterator)
            self.used += 1
            return batch
        except tf.errors.OpError as error:
            carried = carried_error(error)
            if carried is None:
                raise
            raise carried from None
