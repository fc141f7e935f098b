"""Dreamer's representation loss: reconstruct the image (a decoder head on the features)."""

import tensorflow as tf

from dreamer_core import nets
from dreamer_core.variant import RepresentationLoss


class ReconLoss(RepresentationLoss):
    """Declares the image decoder as a world-model head; the core adds its log-likelihood."""

    def __init__(self, config, obs_shape):
        super().__init__(config, obs_shape, name='recon')

    def make_heads(self, config):
        return {'image': nets.ConvDecoder(self.obs_shape, **config.decoder)}

    def report(self, data, wm):
        """Open-loop prediction: observe 5 frames of 6 sequences, imagine the rest."""
        truth = tf.cast(data['image'][:6], tf.float32) + 0.5
        embed = wm.encoder({'image': data['image'][:6, :5]})
        states, _ = wm.rssm.observe(embed, data['action'][:6, :5])
        recon = wm.heads['image'](wm.rssm.get_feat(states)).mode()
        init = {k: v[:, -1] for k, v in states.items()}
        prior = wm.rssm.imagine(data['action'][:6, 5:], init)
        openl = wm.heads['image'](wm.rssm.get_feat(prior)).mode()
        model = tf.concat([recon + 0.5, openl + 0.5], 1)
        error = (model - truth + 1) / 2
        video = tf.clip_by_value(tf.concat([truth, model, error], 2), 0, 1)
        return {'openl': video}
