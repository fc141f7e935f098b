"""Networks: RSSM, convolutional encoder and decoder, MLP heads."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from dreamer_core import dists, hardware, rng
from dreamer_core.config import ConfigError
from dreamer_core.scan import static_scan

tfd = dists.tfd
layers = keras.layers

# An RSSM state: `stoch`, `deter` and the statistics of the latent's distribution.
State = dict[str, tf.Tensor]


def get_act(name: str | Callable | None) -> Callable[[tf.Tensor], tf.Tensor]:
    if name in (None, 'none'):
        return tf.identity
    if callable(name):
        return name
    acts = {
        'elu': tf.nn.elu,
        'relu': tf.nn.relu,
        'tanh': tf.tanh,
        'swish': tf.nn.swish,
        'gelu': tf.nn.gelu,
        'sigmoid': tf.sigmoid,
    }
    if name not in acts:
        raise ConfigError(f'Unknown activation {name!r}; choose one of {sorted(acts)}.')
    return acts[name]


class Module(tf.Module):
    """A tf.Module whose layers are created on first use, named for checkpoints."""

    def get(self, name: str, ctor: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not hasattr(self, '_parts'):
            self._parts = {}
        if name not in self._parts:
            self._parts[name] = ctor(*args, **kwargs)
        return self._parts[name]


class GRUCell(Module):
    """GRU with one Dense over [input, state], LayerNorm in float32, update bias -1."""

    def __init__(self, size: int, update_bias: float = -1) -> None:
        super().__init__()
        self.size = size
        self._update_bias = update_bias

    def __call__(self, inputs: tf.Tensor, state: tf.Tensor) -> tf.Tensor:
        parts = self.get('dense', layers.Dense, 3 * self.size)(tf.concat([inputs, state], -1))
        dtype = parts.dtype
        parts = self.get('norm', layers.LayerNormalization, dtype=tf.float32)(
            tf.cast(parts, tf.float32)
        )
        reset, cand, update = tf.split(tf.cast(parts, dtype), 3, -1)
        reset = tf.nn.sigmoid(reset)
        cand = tf.tanh(reset * cand)
        update = tf.nn.sigmoid(update + self._update_bias)
        return update * cand + (1 - update) * state


class RSSM(Module):
    """Recurrent state-space model with discrete or continuous stochastic latents.

    `posterior_input` is 'deter_embed' (DreamerV2) or 'embed' (TPC: the posterior reads only the
    image embedding); `posterior_std` is 'learned' or 'prior' (TPC: the prior's std, no gradient).
    """

    def __init__(
        self,
        stoch: int = 30,
        deter: int = 200,
        hidden: int = 200,
        discrete: int | bool = False,
        act: str = 'elu',
        std_act: str = 'softplus',
        min_std: float = 0.1,
        posterior_input: str = 'deter_embed',
        posterior_std: str = 'learned',
    ) -> None:
        super().__init__()
        if posterior_input not in ('deter_embed', 'embed'):
            raise ConfigError(
                f"rssm.posterior_input is {posterior_input!r}: use 'deter_embed' or 'embed'."
            )
        if posterior_std not in ('learned', 'prior'):
            raise ConfigError(f"rssm.posterior_std is {posterior_std!r}: use 'learned' or 'prior'.")
        if posterior_std == 'prior' and discrete:
            raise ConfigError(
                'rssm.posterior_std prior needs continuous latents: set --rssm.discrete False.'
            )
        if std_act not in ('softplus', 'sigmoid', 'sigmoid2'):
            raise ConfigError(f'rssm.std_act is {std_act!r}: use softplus, sigmoid or sigmoid2.')
        self._stoch, self._deter, self._hidden = stoch, deter, hidden
        self._discrete = discrete
        self._act = get_act(act)
        self._std_act, self._min_std = std_act, min_std
        self._post_input, self._post_std = posterior_input, posterior_std
        self._cell = GRUCell(deter)

    def initial(self, batch_size: int | tf.Tensor) -> State:
        dtype = dists.compute_dtype()
        zeros = lambda *shape: tf.zeros([batch_size, *shape], dtype)
        if self._discrete:
            state = dict(
                logit=zeros(self._stoch, self._discrete), stoch=zeros(self._stoch, self._discrete)
            )
        else:
            state = dict(mean=zeros(self._stoch), std=zeros(self._stoch), stoch=zeros(self._stoch))
        state['deter'] = zeros(self._deter)
        return state

    def observe(
        self, embed: tf.Tensor, action: tf.Tensor, state: State | None = None
    ) -> tuple[State, State]:
        """Posterior and prior sequences [B, T, ...] from embeddings and previous actions."""
        swap = lambda x: tf.transpose(x, [1, 0] + list(range(2, len(x.shape))))
        if state is None:
            state = self.initial(tf.shape(action)[0])
        post, prior = static_scan(
            lambda prev, inputs: self.obs_step(prev[0], *inputs),
            (swap(action), swap(embed)),
            (state, state),
        )
        post = {k: swap(v) for k, v in post.items()}
        prior = {k: swap(v) for k, v in prior.items()}
        return post, prior

    def imagine(self, action: tf.Tensor, state: State | None = None) -> State:
        """Prior sequence [B, T, ...] from a start state and a sequence of actions."""
        swap = lambda x: tf.transpose(x, [1, 0] + list(range(2, len(x.shape))))
        if state is None:
            state = self.initial(tf.shape(action)[0])
        prior = static_scan(self.img_step, swap(action), state)
        return {k: swap(v) for k, v in prior.items()}

    def get_feat(self, state: State) -> tf.Tensor:
        stoch = self.flat_stoch(state['stoch'])
        return tf.concat([tf.cast(stoch, state['deter'].dtype), state['deter']], -1)

    def get_dist(self, state: State) -> tfd.Distribution:
        if self._discrete:
            logit = tf.cast(state['logit'], tf.float32)
            return tfd.Independent(dists.OneHotDist(logit), 1)
        mean = tf.cast(state['mean'], tf.float32)
        std = tf.cast(state['std'], tf.float32)
        return tfd.MultivariateNormalDiag(mean, std)

    def obs_step(
        self, prev_state: State, prev_action: tf.Tensor, embed: tf.Tensor, sample: bool = True
    ) -> tuple[State, State]:
        prior = self.img_step(prev_state, prev_action, sample)
        embed = tf.cast(embed, dists.compute_dtype())
        x = embed if self._post_input == 'embed' else tf.concat([prior['deter'], embed], -1)
        x = self.get('obs_out', layers.Dense, self._hidden, self._act)(x)
        if self._post_std == 'prior':
            mean = self.get('obs_dist', layers.Dense, self._stoch)(x)
            stats = {'mean': mean, 'std': tf.stop_gradient(prior['std'])}
        else:
            stats = self._suff_stats('obs_dist', x)
        stoch = self._sample(stats, sample)
        post = {'stoch': stoch, 'deter': prior['deter'], **stats}
        return post, prior

    def img_step(self, prev_state: State, prev_action: tf.Tensor, sample: bool = True) -> State:
        dtype = dists.compute_dtype()
        prev_stoch = self.flat_stoch(tf.cast(prev_state['stoch'], dtype))
        x = tf.concat([prev_stoch, tf.cast(prev_action, dtype)], -1)
        x = self.get('img_in', layers.Dense, self._hidden, self._act)(x)
        deter = self._cell(x, tf.cast(prev_state['deter'], dtype))
        x = self.get('img_out', layers.Dense, self._hidden, self._act)(deter)
        stats = self._suff_stats('img_dist', x)
        stoch = self._sample(stats, sample)
        return {'stoch': stoch, 'deter': deter, **stats}

    def kl_loss(
        self,
        post: State,
        prior: State,
        forward: bool,
        balance: float,
        free: float,
        free_avg: bool,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """KL balancing: (1-b) KL(post || sg(prior)) + b KL(sg(post) || prior), free nats."""
        kld = tfd.kl_divergence
        sg = lambda x: tf.nest.map_structure(tf.stop_gradient, x)
        lhs, rhs = (prior, post) if forward else (post, prior)
        mix = balance if forward else (1 - balance)
        clip = lambda value: (
            tf.maximum(tf.reduce_mean(value), free)
            if free_avg
            else tf.reduce_mean(tf.maximum(value, free))
        )
        if balance == 0.5:
            # The original ignores free_avg here: free nats per element, then the mean.
            value = kld(self.get_dist(lhs), self.get_dist(rhs))
            return tf.reduce_mean(tf.maximum(value, free)), value
        value_lhs = value = kld(self.get_dist(lhs), self.get_dist(sg(rhs)))
        value_rhs = kld(self.get_dist(sg(lhs)), self.get_dist(rhs))
        return mix * clip(value_lhs) + (1 - mix) * clip(value_rhs), value

    def flat_stoch(self, stoch: tf.Tensor) -> tf.Tensor:
        if self._discrete:
            shape = tf.concat([tf.shape(stoch)[:-2], [self._stoch * self._discrete]], 0)
            return tf.reshape(stoch, shape)
        return stoch

    def _sample(self, stats, sample):
        dist = self.get_dist(stats)
        stoch = dist.sample(seed=rng.seed()) if sample else dist.mode()
        return tf.cast(stoch, dists.compute_dtype())

    def _suff_stats(self, name, x):
        if self._discrete:
            x = self.get(name, layers.Dense, self._stoch * self._discrete)(x)
            shape = tf.concat([tf.shape(x)[:-1], [self._stoch, self._discrete]], 0)
            return {'logit': tf.reshape(x, shape)}
        x = self.get(name, layers.Dense, 2 * self._stoch)(x)
        mean, std = tf.split(x, 2, -1)
        std = {
            'softplus': lambda: tf.nn.softplus(std),
            'sigmoid': lambda: tf.nn.sigmoid(std),
            'sigmoid2': lambda: 2 * tf.nn.sigmoid(std / 2),
        }[self._std_act]()
        return {'mean': mean, 'std': std + self._min_std}


class PatchConv2D(layers.Layer):
    """Conv2D(filters, kernel, stride, VALID) as gathered patches times the kernel matrix.

    Same variables (kernel [k, k, in, filters], bias), initialisers and outputs as the Keras
    layer: one strided slice per kernel offset, concatenated in the kernel's (row, column,
    channel) order, then one matrix product.
    """

    def __init__(self, filters: int, kernel_size: int, strides: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._filters, self._size, self._stride = filters, kernel_size, strides

    def build(self, input_shape: tf.TensorShape) -> None:
        shape = (self._size, self._size, int(input_shape[-1]), self._filters)
        self.kernel = self.add_weight('kernel', shape, initializer='glorot_uniform')
        self.bias = self.add_weight('bias', (self._filters,), initializer='zeros')

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        k, s = self._size, self._stride
        rows = (inputs.shape[1] - k) // s + 1
        cols = (inputs.shape[2] - k) // s + 1
        patches = tf.concat(
            [
                inputs[:, i : i + s * (rows - 1) + 1 : s, j : j + s * (cols - 1) + 1 : s]
                for i in range(k)
                for j in range(k)
            ],
            -1,
        )
        kernel = tf.cast(tf.reshape(self.kernel, [-1, self._filters]), inputs.dtype)
        return tf.einsum('nhwp,po->nhwo', patches, kernel) + tf.cast(self.bias, inputs.dtype)


class ConvEncoder(Module):
    """Four stride-2 VALID convolutions of depth 2^i * depth; [B, T, H, W, C] -> [B, T, E]."""

    def __init__(
        self,
        depth: int = 32,
        act: str = 'elu',
        kernels: Sequence[int] = (4, 4, 4, 4),
        keys: Sequence[str] = ('image',),
    ) -> None:
        super().__init__()
        self._depth, self._act, self._kernels = depth, get_act(act), tuple(kernels)
        self._keys = tuple(keys)
        if self._keys != ('image',):
            raise ConfigError(f'encoder.keys is {list(keys)}: only [image] is supported.')

    def __call__(self, data: Mapping[str, tf.Tensor]) -> tf.Tensor:
        image = tf.cast(data['image'], dists.compute_dtype())
        x = tf.reshape(image, [-1, *image.shape[-3:]])
        last = len(self._kernels) - 1
        for i, kernel in enumerate(self._kernels):
            # The last layer has a tiny output (2x2 for 64x64 images), where TensorFlow's plain
            # CPU filter gradient is slow; as patches times a matrix it is 1.7x faster. oneDNN's
            # kernel (the default, see dreamer_core/__init__.py) beats both: 1.23 s against
            # 1.56 s (patches) and 4.22 s (plain) for this layer's forward and backward pass at
            # 2500 images of depth 32 (benchmarks/README.md). The variables are the same.
            patches = i == last and not hardware.onednn_enabled()
            ctor = PatchConv2D if patches else layers.Conv2D
            conv = self.get(f'conv{i}', ctor, 2**i * self._depth, kernel, 2)
            x = self._act(conv(x))
        x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
        return tf.reshape(x, tf.concat([tf.shape(image)[:-3], [x.shape[-1]]], 0))


class ConvDecoder(Module):
    """Dense to 32*depth, then transposed convolutions to the image mean of a unit Normal."""

    def __init__(
        self,
        shape: Sequence[int] = (64, 64, 3),
        depth: int = 32,
        act: str = 'elu',
        kernels: Sequence[int] = (5, 5, 6, 6),
    ) -> None:
        super().__init__()
        self._shape = tuple(shape)
        self._depth, self._act, self._kernels = depth, get_act(act), tuple(kernels)

    def __call__(self, features: tf.Tensor) -> tfd.Distribution:
        x = self.get('dense', layers.Dense, 32 * self._depth)(features)
        x = tf.reshape(x, [-1, 1, 1, 32 * self._depth])
        last = len(self._kernels) - 1
        for i, kernel in enumerate(self._kernels):
            depth = self._shape[-1] if i == last else 2 ** (last - i - 1) * self._depth
            act = None if i == last else self._act
            # The first layer sees a 1x1 input, where TensorFlow's CPU transposed convolution is
            # ~20x slower than the same computation written as one matrix product.
            ctor = ConvTransposeFrom1x1 if i == 0 else layers.Conv2DTranspose
            x = self.get(f'convt{i}', ctor, depth, kernel, 2, activation=act)(x)
        if tuple(x.shape[1:]) != self._shape:
            raise ConfigError(
                f'Decoder produces images of shape {tuple(x.shape[1:])}, not {self._shape}: the kernels '
                f'{list(self._kernels)} fit 64x64 images only.'
            )
        mean = tf.reshape(
            tf.cast(x, tf.float32),
            tf.concat([tf.shape(features)[:-1], tf.constant(self._shape, tf.int32)], 0),
        )
        return tfd.Independent(tfd.Normal(mean, 1.0), len(self._shape))


class ConvTransposeFrom1x1(layers.Layer):
    """Conv2DTranspose(filters, kernel, stride, VALID) for 1x1 inputs, as one matrix product.

    Same variables (kernel [k, k, filters, in], per-channel bias), initialisers and outputs as
    the Keras layer; each output pixel (i, j) is kernel[i, j] applied to the input vector.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        strides: int,
        activation: str | Callable | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._filters, self._size = filters, kernel_size
        self._act = keras.activations.get(activation)

    def build(self, input_shape: tf.TensorShape) -> None:
        if tuple(input_shape[1:3]) != (1, 1):
            raise ValueError(f'ConvTransposeFrom1x1 needs 1x1 inputs, got {tuple(input_shape)}.')
        shape = (self._size, self._size, self._filters, int(input_shape[-1]))
        self.kernel = self.add_weight('kernel', shape, initializer='glorot_uniform')
        self.bias = self.add_weight('bias', (self._filters,), initializer='zeros')

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        kernel = tf.cast(self.kernel, inputs.dtype)
        out = tf.einsum('nc,ijoc->nijo', inputs[:, 0, 0], kernel) + tf.cast(self.bias, inputs.dtype)
        return self._act(out)


class MLP(Module):
    """`layers` Dense layers of `units`, then a distribution over `shape`."""

    def __init__(
        self,
        shape: int | Sequence[int],
        layers: int = 4,
        units: int = 400,
        act: str = 'elu',
        dist: str = 'mse',
        min_std: float = 0.1,
    ) -> None:
        super().__init__()
        self._shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self._layers, self._units, self._act = layers, units, get_act(act)
        self._dist, self._min_std = dist, min_std
        if dist not in ('mse', 'binary', 'normal', 'tanh_normal', 'trunc_normal', 'onehot'):
            dists.make(dist, None)  # raises the clear error

    def __call__(self, features: tf.Tensor) -> tfd.Distribution | dists.SampleDist:
        x = tf.cast(features, dists.compute_dtype())
        for i in range(self._layers):
            x = self.get(f'dense{i}', layers.Dense, self._units, self._act)(x)
        size = int(np.prod(self._shape))
        shape = tf.concat([tf.shape(x)[:-1], tf.constant(self._shape, tf.int32)], 0)
        out = tf.cast(tf.reshape(self.get('out', layers.Dense, size)(x), shape), tf.float32)
        std = None
        if self._dist in dists.NEEDS_STD:
            std = tf.cast(tf.reshape(self.get('std', layers.Dense, size)(x), shape), tf.float32)
        return dists.make(self._dist, out, std, self._min_std, len(self._shape))
