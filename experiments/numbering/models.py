"""Baseline models for class-specific numbering, experiment 1 of iDSPN.

Every model maps a one-hot input set of shape [B, S, C] to logits of shape [B, S, set_size]:
row k scores the running index of element k within its class. They are trained with a Hungarian
cross-entropy loss whose matching stays inside each class.

DeepSets and the Transformer without positional encoding are set-equivariant: two equal input
elements always get equal output rows, so they cannot number a class with more than one element
(the paper's 0.0 macro accuracy). Sinusoidal or random positional encodings and the BiLSTM break
the symmetry by position or by noise.

Models come from ``create_numbering_model(name, ...)``. The registry ``NUMBERING_MODELS`` maps a
name to a factory ``(*, hidden, set_size, n_classes) -> nn.Module``; ``register_numbering_model``
extends it. iDSPN and DSPN (``NumberingDSPN``, at the end of this file) are registered as
"idspn" and "dspn"; their factories also take ``latent`` and `idspn_jax.IDSPN` options (the
config's ``model.idspn``, over the reference's settings ``DSPN_OPTIONS``; DSPN's defining
settings come from `experiments.common.models`), and they output rows on the probability
simplex (trained with the Hungarian L2 loss) rather than logits (``numbering_loss_type``). The
random-PE Transformer draws noise from the rng stream ``"noise"``: pass ``rngs={"noise": key}``
to ``init`` and ``apply`` (other models ignore it).

References:
  Zhang, Zhang, Lacoste-Julien, Burghouts, Snoek. Multiset-Equivariant Set Prediction with
  Approximate Implicit Differentiation. ICLR 2022. arXiv:2111.12193.
  Zaheer et al. Deep Sets. NeurIPS 2017.
  Vaswani et al. Attention Is All You Need. NeurIPS 2017.
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import idspn_jax
from experiments.common import models

# Layer norm epsilon of torch.nn.Transformer, whose layout the Transformer baselines follow.
_TORCH_LAYER_NORM_EPSILON = 1e-5


def _check_input(x: jax.Array, *, n_classes: int, set_size: int) -> tuple[int, int]:
  """Checks a [B, S, C] input set and returns (B, S)."""
  if x.ndim != 3 or x.shape[-1] != n_classes:
    raise ValueError(f"expected an input set of shape [B, S, {n_classes}], got {x.shape}")
  b, s, _ = x.shape
  if s > set_size:
    raise ValueError(f"sets have {s} elements, more than the output width set_size={set_size}")
  return b, s


class DeepSetsLayer(nn.Module):
  """Set-equivariant linear layer: ``Dense(x_k) + Dense(mean_k' x_k')``."""

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the layer.

    Args:
      x: Set of shape [B, S, D].

    Returns:
      Shape [B, S, features].
    """
    pooled = jnp.mean(x, axis=1, keepdims=True)  # [B, 1, D]
    # The pooled term needs no bias: the element term already has one.
    return nn.Dense(self.features, name="element")(x) + nn.Dense(
      self.features, use_bias=False, name="pooled"
    )(pooled)  # [B, S, features]


class DeepSets(nn.Module):
  """DeepSets: ``DeepSetsLayer(hidden)``, ReLU, ``DeepSetsLayer(set_size)``."""

  hidden: int
  set_size: int
  n_classes: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps a set to numbering logits.

    Args:
      x: One-hot set of shape [B, S, C].

    Returns:
      Logits of shape [B, S, set_size].
    """
    _check_input(x, n_classes=self.n_classes, set_size=self.set_size)
    h = nn.relu(DeepSetsLayer(self.hidden)(x))  # [B, S, hidden]
    return DeepSetsLayer(self.set_size)(h)  # [B, S, set_size]


class FeedForward(nn.Module):
  """Transformer feed-forward block: Dense(ff), ReLU, Dense(d_model)."""

  features: int
  d_model: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.relu(nn.Dense(self.features)(x))  # [B, S, ff]
    return nn.Dense(self.d_model)(h)  # [B, S, d_model]


class EncoderLayer(nn.Module):
  """Post-LN encoder layer (torch ``TransformerEncoderLayer``, no dropout).

  x <- LN(x + SelfAttention(x)); x <- LN(x + FeedForward(x)).
  """

  d_model: int
  num_heads: int
  ff_features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    attention = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads, qkv_features=self.d_model, out_features=self.d_model
    )
    x = nn.LayerNorm(epsilon=_TORCH_LAYER_NORM_EPSILON)(x + attention(x, x, x))
    ff = FeedForward(self.ff_features, self.d_model)
    return nn.LayerNorm(epsilon=_TORCH_LAYER_NORM_EPSILON)(x + ff(x))


class DecoderLayer(nn.Module):
  """Post-LN decoder layer (torch ``TransformerDecoderLayer``, no dropout, no mask).

  y <- LN(y + SelfAttention(y)); y <- LN(y + CrossAttention(y, memory));
  y <- LN(y + FeedForward(y)).
  """

  d_model: int
  num_heads: int
  ff_features: int

  @nn.compact
  def __call__(self, y: jax.Array, memory: jax.Array) -> jax.Array:
    self_attention = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads, qkv_features=self.d_model, out_features=self.d_model
    )
    y = nn.LayerNorm(epsilon=_TORCH_LAYER_NORM_EPSILON)(y + self_attention(y, y, y))
    cross_attention = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads, qkv_features=self.d_model, out_features=self.d_model
    )
    y = nn.LayerNorm(epsilon=_TORCH_LAYER_NORM_EPSILON)(y + cross_attention(y, memory, memory))
    ff = FeedForward(self.ff_features, self.d_model)
    return nn.LayerNorm(epsilon=_TORCH_LAYER_NORM_EPSILON)(y + ff(y))


def sinusoidal_encoding(length: int, features: int) -> np.ndarray:
  """Sinusoidal positional encoding of Vaswani et al.

  PE[p, 2i] = sin(p / 10000^(2i / D)), PE[p, 2i + 1] = cos(p / 10000^(2i / D)).

  Args:
    length: Number of positions S.
    features: Encoding width D.

  Returns:
    float32 array of shape [S, D].
  """
  position = np.arange(length, dtype=np.float64)[:, None]  # [S, 1]
  frequency = np.exp(-np.log(10_000.0) * np.arange(0, features, 2) / features)  # [ceil(D/2)]
  angle = position * frequency[None, :]  # [S, ceil(D/2)]
  encoding = np.zeros((length, features), dtype=np.float64)
  encoding[:, 0::2] = np.sin(angle)
  encoding[:, 1::2] = np.cos(angle[:, : features // 2])
  return encoding.astype(np.float32)


class RandomPositionalEncoding(nn.Module):
  """Random "positions": ``concat(Dense_{features/2}(x), alpha + exp(beta) * noise)``.

  The noise is N(0, 1) of shape [B, S, features/2], drawn from the ``"noise"`` rng stream on every
  call, so equal elements get different codes. The scalars alpha and beta are learned and start
  at 0, i.e. at unit-variance noise.
  """

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Encodes a set.

    Args:
      x: Set of shape [B, S, D].

    Returns:
      Shape [B, S, features].
    """
    if self.features % 2:
      raise ValueError(f"features ({self.features}) must be even")
    embedded = nn.Dense(self.features // 2)(x)  # [B, S, features/2]
    alpha = self.param("alpha", nn.initializers.zeros, (), embedded.dtype)
    beta = self.param("beta", nn.initializers.zeros, (), embedded.dtype)
    noise = jax.random.normal(self.make_rng("noise"), embedded.shape, embedded.dtype)
    return jnp.concatenate([embedded, alpha + jnp.exp(beta) * noise], axis=-1)  # [B, S, features]


class NumberingTransformer(nn.Module):
  """Transformer encoder-decoder baseline (torch ``nn.Transformer`` layout).

  The encoder reads ``src = Dense(x)``; the decoder reads a second embedding ``tgt`` of x and
  attends to the encoded set. ``positional`` chooses how ``tgt`` is made:

  - ``"none"``: ``tgt = Dense(x)``. The model is set-equivariant.
  - ``"sinusoidal"``: ``tgt = Dense(x) + PE``, with the sinusoidal encoding of the positions.
  - ``"random"``: ``tgt = concat(Dense_{hidden/2}(x), alpha + exp(beta) * noise)``, noise
    N(0, 1) of shape [B, S, hidden/2] from the ``"noise"`` rng stream; the scalars alpha and beta
    are learned and start at 0.

  Attributes:
    hidden: Model width d_model; the feed-forward width is 2 * hidden.
    set_size: Output width (logits per element).
    n_classes: Input width C.
    positional: "none", "sinusoidal" or "random".
    num_heads: Attention heads; must divide hidden.
    num_layers: Encoder layers, and decoder layers.
  """

  hidden: int
  set_size: int
  n_classes: int
  positional: str = "none"
  num_heads: int = 8
  num_layers: int = 2

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps a set to numbering logits.

    Args:
      x: One-hot set of shape [B, S, C].

    Returns:
      Logits of shape [B, S, set_size].
    """
    _, s = _check_input(x, n_classes=self.n_classes, set_size=self.set_size)
    if self.hidden % self.num_heads:
      raise ValueError(f"hidden ({self.hidden}) must be divisible by num_heads ({self.num_heads})")
    layer_kwargs = dict(d_model=self.hidden, num_heads=self.num_heads, ff_features=2 * self.hidden)

    memory = nn.Dense(self.hidden, name="src_embed")(x)  # [B, S, hidden]
    for i in range(self.num_layers):
      memory = EncoderLayer(**layer_kwargs, name=f"encoder_{i}")(memory)
    memory = nn.LayerNorm(epsilon=_TORCH_LAYER_NORM_EPSILON, name="encoder_norm")(memory)

    if self.positional == "none":
      y = nn.Dense(self.hidden, name="tgt_embed")(x)  # [B, S, hidden]
    elif self.positional == "sinusoidal":
      y = nn.Dense(self.hidden, name="tgt_embed")(x)  # [B, S, hidden]
      y = y + jnp.asarray(sinusoidal_encoding(s, self.hidden), y.dtype)[None]  # [B, S, hidden]
    elif self.positional == "random":
      y = RandomPositionalEncoding(self.hidden, name="tgt_embed")(x)  # [B, S, hidden]
    else:
      raise ValueError(
        f"positional must be 'none', 'sinusoidal' or 'random', got {self.positional!r}"
      )

    for i in range(self.num_layers):
      y = DecoderLayer(**layer_kwargs, name=f"decoder_{i}")(y, memory)
    y = nn.LayerNorm(epsilon=_TORCH_LAYER_NORM_EPSILON, name="decoder_norm")(y)
    return nn.Dense(self.set_size, name="head")(y)  # [B, S, set_size]


class BiLSTM(nn.Module):
  """Bidirectional LSTM baseline: Dense(hidden), ``num_layers`` BiLSTM layers, Dense(set_size).

  Each layer runs one LSTM of width ``hidden`` forward and one backward over the set in its
  input order and concatenates them, as torch ``nn.LSTM(bidirectional=True)``.
  """

  hidden: int
  set_size: int
  n_classes: int
  num_layers: int = 2

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps a set to numbering logits.

    Args:
      x: One-hot set of shape [B, S, C].

    Returns:
      Logits of shape [B, S, set_size].
    """
    _check_input(x, n_classes=self.n_classes, set_size=self.set_size)
    h = nn.Dense(self.hidden, name="embed")(x)  # [B, S, hidden]
    for i in range(self.num_layers):
      h = nn.Bidirectional(
        nn.RNN(nn.OptimizedLSTMCell(self.hidden), name=f"forward_{i}"),
        nn.RNN(nn.OptimizedLSTMCell(self.hidden), name=f"backward_{i}"),
        name=f"bilstm_{i}",
      )(h)  # [B, S, 2 * hidden]
    return nn.Dense(self.set_size, name="head")(h)  # [B, S, set_size]


ModelFactory = Callable[..., nn.Module]

# Name -> factory(*, hidden, set_size, n_classes). Extend with register_numbering_model.
NUMBERING_MODELS: dict[str, ModelFactory] = {
  "deepsets": lambda *, hidden, set_size, n_classes: DeepSets(hidden, set_size, n_classes),
  "transformer_no_pe": lambda *, hidden, set_size, n_classes: NumberingTransformer(
    hidden, set_size, n_classes, positional="none"
  ),
  "transformer_pe": lambda *, hidden, set_size, n_classes: NumberingTransformer(
    hidden, set_size, n_classes, positional="sinusoidal"
  ),
  "transformer_random_pe": lambda *, hidden, set_size, n_classes: NumberingTransformer(
    hidden, set_size, n_classes, positional="random"
  ),
  "bilstm": lambda *, hidden, set_size, n_classes: BiLSTM(hidden, set_size, n_classes),
}


def register_numbering_model(name: str, factory: ModelFactory) -> None:
  """Adds ``factory(*, hidden, set_size, n_classes) -> nn.Module`` under ``name``."""
  if name in NUMBERING_MODELS:
    raise ValueError(f"a numbering model named {name!r} is already registered")
  NUMBERING_MODELS[name] = factory


def create_numbering_model(name: str, *, hidden: int, set_size: int, n_classes: int) -> nn.Module:
  """Creates a numbering model by name.

  Args:
    name: One of ``NUMBERING_MODELS`` ("deepsets", "transformer_no_pe", "transformer_pe",
      "transformer_random_pe", "bilstm", and whatever was registered since).
    hidden: Hidden width (256 in the paper).
    set_size: Output width: logits per element over the running indices [0, set_size).
    n_classes: Input width C of the one-hot classes.

  Returns:
    A Flax module mapping a [B, S, C] one-hot set to [B, S, set_size] logits.
  """
  if name not in NUMBERING_MODELS:
    raise ValueError(
      f"unknown numbering model {name!r}; valid names: {', '.join(sorted(NUMBERING_MODELS))}"
    )
  for option, value in (("hidden", hidden), ("set_size", set_size), ("n_classes", n_classes)):
    if int(value) != value or value <= 0:
      raise ValueError(f"{option} must be a positive integer, got {value!r}")
  return NUMBERING_MODELS[name](hidden=hidden, set_size=set_size, n_classes=n_classes)


# ---------------------------------------------------------------------------------------------
# iDSPN and DSPN.

# The inner-optimisation options of the two set-prediction models, as the reference's
# exp1 scripts run them: iDSPN clips each set's inner gradient at 40 and projects its start set;
# DSPN does neither, and runs with DSPN's defining settings (momentum 0, backpropagation
# through the unrolled steps: experiments.common.models.DSPN) on top.
DSPN_OPTIONS: dict[str, dict] = {
  "idspn": dict(
    steps=20,
    learning_rate=1.0,
    momentum=0.9,
    nesterov=True,
    clip_norm=40.0,
    backward="approx",
    project_start=True,
  ),
  "dspn": dict(
    steps=20,
    learning_rate=1.0,
    nesterov=True,
    clip_norm=None,
    project_start=False,
    **models.DSPN,
  ),
}
# The layer options NumberingDSPN sets itself (besides the sizes).
FIXED_OPTIONS = frozenset({"energy", "projection", "learn_start"})


class NumberingDSPN(nn.Module):
  """(i)DSPN for numbering: ``x -> z = FSEncoder(x) -> Y* = argmin_Y L(Y; x, z)``.

  The energy is the concat-input one, ``L(Y) = 0.5 * mean_k (g(concat(Y, X))_k - z_k)^2``, and
  every inner step projects each row of Y onto the probability simplex, so row k is a
  distribution over the running indices of element k. Each call starts from fresh
  ``0.1 * N(0, 1)`` noise drawn from the ``"start"`` rng stream (the reference does not learn a
  start set here): the noise is what lets equal input elements end at different rows.

  Unlike the baselines this model outputs probabilities, not logits; it is trained with the
  Hungarian L2 loss (see ``NUMBERING_LOSS_TYPES``).

  Attributes:
    hidden: Hidden width of both FS encoders (256 in the paper).
    latent: Width K of z (256 in the paper).
    set_size: Output width: probabilities over the running indices [0, set_size).
    n_classes: Input width C.
    idspn: Keyword options of `idspn_jax.IDSPN` (steps, learning_rate, momentum, nesterov,
      clip_norm, backward, project_start, ...); see ``DSPN_OPTIONS``.
  """

  hidden: int
  latent: int
  set_size: int
  n_classes: int
  idspn: dict

  # The shared loop passes its inner-step count to models that say they take one.
  takes_inner_steps = True

  @nn.compact
  def __call__(
    self, x: jax.Array, *, steps: int | None = None, y0: jax.Array | None = None
  ) -> jax.Array:
    """Numbers a set.

    Args:
      x: One-hot set of shape [B, S, C].
      steps: Inner steps for this call (default: the ``idspn`` option).
      y0: Start sets of shape [B, S, set_size] replacing the random start (for tests).

    Returns:
      Rows on the probability simplex, of shape [B, S, set_size].
    """
    _, s = _check_input(x, n_classes=self.n_classes, set_size=self.set_size)
    if clash := (models.MODEL_FIXED | FIXED_OPTIONS) & set(self.idspn):
      raise ValueError(f"the idspn options may not set {sorted(clash)}: NumberingDSPN fixes them")
    z = idspn_jax.FSEncoder(self.hidden, self.latent, s, name="input_encoder")(x)  # [B, K]
    decoder = idspn_jax.IDSPN(
      set_size=s,
      set_dim=self.set_size,
      latent=self.latent,
      hidden=self.hidden,
      energy="mse_concat_input",
      projection="simplex",
      learn_start=False,
      name="decoder",
      **self.idspn,
    )
    return decoder(z, x, y0=y0, steps=steps)  # [B, S, set_size]


def _dspn_factory(name: str) -> ModelFactory:
  def factory(*, hidden, set_size, n_classes, latent=None, **options):
    """The model; ``options``: `idspn_jax.IDSPN` options over ``DSPN_OPTIONS[name]`` (None: not
    set; clip_norm 0: no clipping), checked by `experiments.common.models.idspn_options`."""
    return NumberingDSPN(
      hidden=hidden,
      latent=hidden if latent is None else latent,
      set_size=set_size,
      n_classes=n_classes,
      idspn=models.idspn_options(options, decoder=name, defaults=DSPN_OPTIONS[name],
                                 fixed=FIXED_OPTIONS),
    )

  return factory


for _name in DSPN_OPTIONS:
  register_numbering_model(_name, _dspn_factory(_name))

# The loss each model trains with: the Hungarian L2 distance between the simplex rows of
# (i)DSPN and the one-hot targets, and the Hungarian cross-entropy of the baselines' logits.
NUMBERING_LOSS_TYPES: dict[str, str] = {"idspn": "l2", "dspn": "l2"}


def numbering_loss_type(name: str) -> str:
  """``"l2"`` or ``"ce"``: the loss type of `idspn_jax.losses.hungarian_loss_numbering`."""
  if name not in NUMBERING_MODELS:
    raise ValueError(
      f"unknown numbering model {name!r}; valid names: {', '.join(sorted(NUMBERING_MODELS))}"
    )
  return NUMBERING_LOSS_TYPES.get(name, "ce")
