"""Runs before any test module: the package sets TensorFlow's environment (tf-keras, quiet C++
logs) before anything imports TensorFlow, so test modules need no import for its side effect.
Fixtures more than one test module uses live here too."""

import pytest

import dreamer_core  # noqa: F401


@pytest.fixture
def opened():
    """Envs appended here are closed after the test, whether it passed or not."""
    made = []
    yield made
    for env in made:
        env.close()
