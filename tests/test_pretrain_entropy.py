"""benchmarks/pretrain_entropy.py: what the original is given and the batches both sides get."""

import importlib.util

import numpy as np

from dreamer_core import registry
from tests import e2e

spec = importlib.util.spec_from_file_location(
    'pretrain_entropy', e2e.REPO / 'benchmarks' / 'pretrain_entropy.py'
)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_the_original_gets_every_value_of_the_small_block():
    variant = registry.get('dreamerpro')
    config = bench.our_config(variant, 'dmc_cartpole_swingup', 1)
    flags = bench.small_overrides(variant, config)
    # The shared block and DreamerPro's own entry, at the values our config ends up with.
    assert flags['dataset.batch'] == config.dataset.batch == 16
    assert flags['encoder.depth'] == 16 and flags['actor.units'] == 200
    assert flags['rssm.num_prototypes'] == config.rssm.num_prototypes
    assert flags['prefill'] == 2500
    assert 'rssm.hidden' not in flags  # not in `small`: the original keeps its dmc value


def test_both_sides_get_the_same_batches_cut_from_whole_episodes(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for i, length in enumerate([12, 20]):
        arrays[f'{i}/image'] = rng.integers(0, 255, (length, 4, 4, 3), dtype=np.uint8)
        arrays[f'{i}/action'] = rng.uniform(-1, 1, (length, 2)).astype(np.float32)
        arrays[f'{i}/reward'] = np.arange(length, dtype=np.float32) + 100 * i
        arrays[f'{i}/discount'] = np.ones(length, np.float32)
    path = tmp_path / 'episodes.npz'
    np.savez(path, **arrays)
    one, two = bench.batches(path, 5, 6, seed=3), bench.batches(path, 5, 6, seed=3)
    seen = set()
    for _ in range(20):
        a, b = next(one), next(two)
        for key in bench.KEYS:
            np.testing.assert_array_equal(a[key], b[key])
        assert a['image'].shape == (5, 6, 4, 4, 3) and a['action'].shape == (5, 6, 2)
        for row in a['reward']:  # consecutive steps of one episode
            episode, start = int(row[0] // 100), int(row[0] % 100)
            np.testing.assert_array_equal(row, np.arange(start, start + 6) + 100 * episode)
            seen.add((episode, start))
    assert {e for e, _ in seen} == {0, 1}
    assert max(s for e, s in seen if e == 1) == 14  # the last possible start is drawn too
