"""The contract between the shared world model and a variant's representation loss.

The three agents differ only here (README, "The agents in brief"): Dreamer reconstructs the
image, DreamerPro clusters augmented views onto prototypes, TPC predicts latents contrastively.
A variant subclasses `RepresentationLoss`, names it in its registry entry
(`dreamer_core/registry.py`), and the world model does the rest:

    data = loss.preprocess(wm.preprocess(batch))           # e.g. DreamerPro's augmentation
    embed = encoder(data); post, prior = rssm.observe(...)
    losses, metrics = loss(data, embed, post, prior, feat)  # unweighted terms named in `terms`
    (+ KL if `uses_kl`, + the log-likelihood of every head, its own `make_heads()` included)
    model_loss = sum(config.loss_scales[name] * value)      # a term without a scale is an error
    optimizer step; loss.after_update(encoder)              # e.g. DreamerPro's EMA encoder
    loss.report(data, wm)                                    # images for TensorBoard, every log

Settings: a variant reads its own keys from the config it is given, with the original's names
(e.g. `rssm.num_prototypes`); keys it adds to the `rssm` block are listed in `rssm_keys` so that
the RSSM is built from its own keys only.
"""

from __future__ import annotations

import tensorflow as tf

from dreamer_core.config import Config

Tensors = dict[str, tf.Tensor]


class RepresentationLoss(tf.Module):
    """Base class of a variant's representation loss; override what the variant changes."""

    # Names of the loss terms __call__ returns; each is weighted by config.loss_scales[name].
    terms: tuple[str, ...] = ()
    # Whether the world model adds the KL term between posterior and prior (scale 'kl').
    uses_kl: bool = True
    # Keys this variant adds to the config's `rssm` block (read here, not by the RSSM).
    rssm_keys: tuple[str, ...] = ()

    def __init__(self, config: Config, obs_shape: tuple[int, ...], name: str | None = None):
        super().__init__(name=name)
        self.obs_shape = tuple(obs_shape)

    def make_heads(self, config: Config) -> dict[str, tf.Module]:
        """Extra world-model heads {name: module(feat) -> distribution of data[name]}; the core
        adds their negative log-likelihood as the loss term `name`. Called once."""
        return {}

    def preprocess(self, data: Tensors) -> Tensors:
        """The training batch after the core's preprocessing (images in [-0.5, 0.5])."""
        return data

    def __call__(
        self, data: Tensors, embed: tf.Tensor, post: Tensors, prior: Tensors, feat: tf.Tensor
    ) -> tuple[Tensors, Tensors]:
        """(losses, metrics): unweighted scalar terms named in `terms`, and scalars to log."""
        return {}, {}

    def after_update(self, encoder: tf.Module) -> None:
        """Runs after every optimizer step of the world model, given its online encoder."""

    def report(self, data: Tensors, wm) -> Tensors:
        """Images or videos for TensorBoard, from a preprocessed batch and the world model."""
        return {}
