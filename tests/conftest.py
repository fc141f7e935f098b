"""Runs before any test module: the package sets TensorFlow's environment (tf-keras, quiet C++
logs) before anything imports TensorFlow, so test modules need no import for its side effect."""

import dreamer_core  # noqa: F401
