"""Tests of the numbering experiment: (i)DSPN models, the task on the shared runner, configs.

The reference's tiny end-to-end vectors (e2e_exp1_*) go through our NumberingDSPN and the
library's class-restricted Hungarian L2 loss; a short iDSPN run on the ``test`` config must beat
what any set-equivariant model can reach on the same sets.
"""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.common import train
from experiments.configs import numbering as numbering_config
from experiments.numbering import models as numbering_models
from experiments.numbering import task as numbering
from idspn_jax import losses
from reference_vectors import TOL, load_end_to_end, torch_encoder_params

# ---------------------------------------------------------------------------------------------
# The reference's end-to-end vectors through our model and the library's loss.


def _reference_model(reference_dir, name):
  """(model, variables, data, grads) of the stored tiny exp1 model (S=6, 3 classes, width 16)."""
  data, params, grads = load_end_to_end(reference_dir, name)
  _, s, c = data["x"].shape
  width = params["input_to_z.mlp.0.weight"].shape[0]
  model = numbering_models.NUMBERING_MODELS[name.removeprefix("e2e_exp1_")](
    hidden=width, set_size=s, n_classes=c, steps=5
  )
  variables = {
    "params": {
      "input_encoder": torch_encoder_params(params, "input_to_z"),
      "decoder": {"g": torch_encoder_params(params, "inner_obj.encoder")},
    }
  }
  return model, variables, data, grads


def _loss(data, out):
  loss, _ = losses.hungarian_loss_numbering(data["x"], out, data["y"], loss_type="l2")
  return jnp.mean(loss)


@pytest.mark.parametrize("name", ["e2e_exp1_idspn", "e2e_exp1_dspn"])
def test_reference_forward_loss_and_gradients(reference_dir, name):
  model, variables, data, grads = _reference_model(reference_dir, name)
  apply = lambda v, steps: model.apply(v, data["x"], y0=data["set_0"], steps=steps)

  def loss_fn(v):  # the library's own gradient, for iDSPN's Jacobian-free one too
    out = apply(v, 5)  # [B, S, S]
    return _loss(data, out), out

  # Jitted (one compile gives the output, the loss and the gradients): eager inner loops
  # dispatch op by op and take far longer than a compile.
  (loss, out), grads_ours = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables)
  np.testing.assert_allclose(out, data["out"], **TOL)
  np.testing.assert_allclose(loss, data["loss"], **TOL)

  ours = grads_ours["params"]
  expected = {
    "input_encoder": torch_encoder_params(grads, "input_to_z"),
    "decoder": {"g": torch_encoder_params(grads, "inner_obj.encoder")},
  }
  flat_ours = dict(jax.tree_util.tree_leaves_with_path(ours))
  for path, want in jax.tree_util.tree_leaves_with_path(expected):
    np.testing.assert_allclose(flat_ours[path], want, **TOL, err_msg=jax.tree_util.keystr(path))


def test_dspn_options_follow_the_reference_scripts():
  idspn = numbering_models.NUMBERING_MODELS["idspn"](hidden=8, set_size=4, n_classes=2)
  dspn = numbering_models.NUMBERING_MODELS["dspn"](hidden=8, set_size=4, n_classes=2)
  assert idspn.latent == 8 and idspn.idspn["clip_norm"] == 40.0
  assert idspn.idspn["momentum"] == 0.9 and idspn.idspn["backward"] == "approx"
  assert dspn.idspn["momentum"] == 0.0 and dspn.idspn["backward"] == "unroll"
  assert dspn.idspn["clip_norm"] is None and not dspn.idspn["project_start"]
  assert numbering_models.numbering_loss_type("idspn") == "l2"
  assert numbering_models.numbering_loss_type("deepsets") == "ce"


# ---------------------------------------------------------------------------------------------
# Configs.


def _config(**fields) -> ml_collections.ConfigDict:
  config = numbering_config.get_config("test")
  for dotted, value in fields.items():
    section, key = dotted.split("__")
    config[section][key] = value
  return config


def test_paper_config_is_the_posters_setting():
  config = numbering.resolve_config(numbering_config.get_config("paper"))
  assert (config.data.set_size, config.data.n_classes, config.data.n_per_sample) == (64, 4, 4)
  assert (config.data.val_size, config.data.test_size) == (6_400, 64_000)
  assert (config.train.batch_size, config.train.learning_rate) == (128, 1e-3)
  assert (config.model.hidden, config.model.latent, config.model.idspn.steps) == (256, 256, 20)
  assert config.train.steps == 10_000 * 640 // 128
  for size, epochs in (("10x", 1_000), ("100x", 100)):
    paper = numbering_config.get_config("paper")
    paper.data.train_size = size
    assert numbering.resolve_config(paper).train.steps == epochs * 5 * int(size[:-1])
  paper = numbering_config.get_config("paper")
  paper.model.name = "bilstm"
  assert numbering.resolve_config(paper).model.hidden == 64


def test_config_errors_are_clear():
  with pytest.raises(ValueError, match="unknown variant 'smal'"):
    numbering_config.get_config("smal")
  with pytest.raises(ValueError, match="unknown numbering model 'idpsn'.*deepsets.*idspn"):
    numbering.resolve_config(_config(model__name="idpsn"))
  with pytest.raises(ValueError, match="train_size must be one of"):
    numbering.resolve_config(_config(data__train_size="10X"))
  resolved = numbering.resolve_config(_config())
  with pytest.raises(AttributeError):
    resolved.model.hiden = 3  # a typo cannot add a field to the resolved, locked config
  with pytest.raises(ValueError, match="not resolved"):
    numbering.create_task(_config())
  with pytest.raises(ValueError, match="n_per_sample=3 exceeds config.data.n_classes=2"):
    config = _config(data__n_classes=2, data__n_per_sample=3)
    numbering.create_task(numbering.resolve_config(config))


def test_model_idspn_reaches_the_layer_and_dspn_keeps_its_settings():
  """config.model.idspn overrides the reference's settings of either model; DSPN keeps its
  momentum 0 and "unroll" backward, and a value that contradicts them is an error."""
  config = _config(model__name="dspn")
  config.model.idspn.clip_norm = 5.0
  config.model.idspn.backward = "unroll"  # DSPN's own value: fine
  options = numbering.create_model(numbering.resolve_config(config)).net.idspn
  assert (options["clip_norm"], options["momentum"], options["backward"]) == (5.0, 0.0, "unroll")
  assert not options["project_start"]
  config = _config(model__name="idspn")
  config.model.idspn.clip_norm = 0.0  # no clipping
  config.model.idspn.momentum = 0.5
  options = numbering.create_model(numbering.resolve_config(config)).net.idspn
  assert options["clip_norm"] is None and options["momentum"] == 0.5
  config = _config(model__name="dspn")
  config.model.idspn.backward = "approx"
  with pytest.raises(ValueError, match=r"DSPN runs its inner loop with momentum=0.0, "
                                       r"backward='unroll', but config.model.idspn.backward="):
    numbering.create_task(numbering.resolve_config(config))
  config = _config(model__name="deepsets")
  config.model.idspn.implicit_at = "last"
  with pytest.raises(ValueError, match=r"config.model.idspn.implicit_at='last' is not one of"):
    numbering.create_task(numbering.resolve_config(config))


# ---------------------------------------------------------------------------------------------
# A tiny run on the shared runner.


def _set_equivariant_bound(inputs: np.ndarray) -> tuple[float, float]:
  """The best micro and macro accuracy any set-equivariant model can reach on [N, S, C] sets.

  Equal input elements get equal output rows, hence equal argmaxes: at most one element of
  each class is numbered right, and a set is right only if no class repeats.
  """
  classes = np.argmax(inputs, -1)  # [N, S]
  present = np.array([len(np.unique(row)) for row in classes])  # [N]
  s = classes.shape[1]
  return float(np.mean(present / s)), float(np.mean(present == s))


def test_tiny_idspn_run_separates_equal_elements(tmp_path):
  # Every set is 4 elements of one class (of 2): the targets are 0, 1, 2, 3, so a model must
  # give 4 equal inputs 4 different outputs. A set-equivariant model gets 1 in 4 right at best.
  config = _config(
    model__name="idspn",
    data__set_size=4,
    data__n_classes=2,
    data__n_per_sample=1,
    train__steps=150,
    train__num_evals=1,
    train__learning_rate=3e-3,
  )
  config = numbering.resolve_config(config)
  task = numbering.create_task(config)
  state = train.train_and_evaluate(config, tmp_path, task)

  summary = json.loads((tmp_path / "summary.json").read_text())
  test_inputs = np.concatenate([b["inputs"] for b in task.eval_batches("test")])
  micro_bound, macro_bound = _set_equivariant_bound(test_inputs)
  assert (micro_bound, macro_bound) == (0.25, 0.0)
  assert summary["test"]["micro_accuracy"] > 0.75, summary
  assert summary["test"]["macro_accuracy"] > 0.5, summary
  assert int(state.step) == 150 and (tmp_path / "metrics.jsonl").is_file()
