"""The shared DreamerV2 core used by the Dreamer, TPC and DreamerPro variants."""

import os

# tf-keras (Keras 2) is the Keras this code base uses; make TensorFlow agree.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
