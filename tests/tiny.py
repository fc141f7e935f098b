"""The tiny model the tests build: the same algorithms with a few units per layer."""

TINY_MODEL = (
    '--rssm.hidden 16 --rssm.deter 16 --rssm.stoch 4 --encoder.depth 2 '
    '--reward_head.units 16 --reward_head.layers 1 --actor.units 16 --actor.layers 1 '
    '--critic.units 16 --critic.layers 1 --imag_horizon 3'
).split()

# What each variant adds: Dreamer's decoder, DreamerPro's prototypes.
VARIANT_MODEL = {
    'Dreamer': '--decoder.depth 2'.split(),
    'DreamerPro': '--rssm.num_prototypes 12 --rssm.proto 6'.split(),
    'TPC': [],
}
