"""The CLEVR experiment end to end on the tiny `test` config: metrics, pictures, bad input, and
the extra validation sets of ``config.eval.extra_val``."""

import dataclasses
import json
import logging
import os
import pathlib
import shutil

import jax
import numpy as np
import pytest

import idspn_jax
from experiments.clevr import data as clevr_data
from experiments.clevr import plots as clevr_plots
from experiments.clevr import render, scenes
from experiments.clevr import task as clevr
from experiments.common import models, train
from experiments.configs import clevr as clevr_config

pytestmark = pytest.mark.filterwarnings("ignore:.*OpenCV.*")


def _config(root, **data):
  config = clevr_config.get_config("test")
  config.data.root = str(root)
  for key, value in data.items():
    config.data[key] = value
  return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """One tiny training run that renders its data first: (config, workdir, state, log text).

  It also evaluates an extra validation set "odd" of 6 scenes (a batch of 4 and a padded one).
  """
  root = tmp_path_factory.mktemp("clevr") / "synth"
  odd = tmp_path_factory.mktemp("clevr_odd") / "odd"
  render.render_dataset(str(odd), splits={"val": 6}, image_size=32, seed=3, num_workers=0)
  workdir = tmp_path_factory.mktemp("run")
  config = _config(root)
  config.eval.extra_val = f"odd={odd}"
  records = []
  handler = logging.Handler()
  handler.emit = lambda record: records.append(record.getMessage())
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.INFO)
  absl_logger.addHandler(handler)
  try:
    state = train.train_and_evaluate(config, workdir, clevr.create_task(config))
  finally:
    absl_logger.removeHandler(handler)
    absl_logger.setLevel(level)
  return config, workdir, state, "\n".join(records)


def test_renders_the_data_trains_and_evaluates(run):
  config, workdir, state, log = run
  root = config.data.root
  assert "the synthetic source" in log and root in log
  for split in ("train", "val"):
    assert os.path.isfile(os.path.join(root, "scenes", f"CLEVR_{split}_scenes.json"))
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["step"] == config.train.steps
  for name in ("ap_inf", "ap_1", "ap_0_5", "ap_0_25", "ap_0_125", "ap_0_0625"):
    assert 0.0 <= summary["val"][name] <= 100.0
  assert "ap_inf" in (workdir / "summary.md").read_text()
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(state.params)))
  assert int(state.step) == config.train.steps
  assert (workdir / "best").is_dir()


def test_a_picture_is_written_per_evaluation(run):
  _, workdir, _, _ = run
  pictures = sorted((workdir / "pictures").glob("*.png"))
  assert [p.name for p in pictures] == ["odd_step0000002.png", "odd_step0000004.png",
                                        "val_step0000002.png", "val_step0000004.png"]
  assert all(p.stat().st_size > 10_000 for p in pictures)
  assert not list((workdir / "pictures").glob("*.tmp*"))


def test_model_output_shape(run):
  config, _, state, _ = run
  images = np.zeros((2, config.data.image_size, config.data.image_size, 3), np.float32)
  pred = jax.eval_shape(
    lambda p: state.apply_fn({"params": p, "batch_stats": state.batch_stats}, {"image": images},
                             steps=2, rngs={"start": jax.random.key(0)}),
    state.params,
  )
  assert pred.shape == (2, 10, 19)


def test_average_precision_names_and_a_perfect_prediction(run):
  config, _, _, _ = run
  source = clevr_data.create_clevr_source("synthetic", split="val", root=config.data.root)
  target = source.sets  # [M, 10, 19]
  assert clevr.AP_NAMES == ("ap_inf", "ap_1", "ap_0_5", "ap_0_25", "ap_0_125", "ap_0_0625")
  perfect = clevr.eval_metrics([target[:4], target[4:]], [{"set": target[:4]},
                                                          {"set": target[4:]}])
  for name in clevr.AP_NAMES:
    assert perfect[name] == pytest.approx(100.0), name
  for name in ("acc_material", "acc_color", "acc_shape", "acc_size", "acc_all", "acc_mask"):
    assert perfect[name] == pytest.approx(100.0), name
  assert perfect["coord_dist"] == pytest.approx(0.0, abs=1e-6)
  shifted = target.copy()
  shifted[:, :, 0] += 0.3 / scenes.COORD_SCALE  # Every object 0.3 away.
  ap = clevr.average_precisions(shifted, target)
  assert ap["ap_inf"] == ap["ap_0_5"] == pytest.approx(100.0) and ap["ap_0_25"] == 0.0


def test_attribute_accuracies_after_matching():
  """Two images, 3 + 1 objects: one wrong colour, one object moved 0.6, one padding row whose
  mask is 0.7; rows permuted, so only the matching can pair them."""
  def obj(coords, material, color, shape, size):
    return scenes.encode_objects(
      np.array([coords]), np.array([material]), np.array([color]), np.array([shape]),
      np.array([size]), set_size=1)[0]

  target = np.zeros((2, 10, scenes.OBJECT_DIM), np.float32)
  target[0, 0] = obj((0.0, 0.0, 0.35), 0, 1, 2, 1)
  target[0, 1] = obj((2.0, -1.0, 0.7), 1, 4, 0, 0)
  target[0, 2] = obj((-2.0, 2.0, 0.35), 0, 7, 1, 1)
  target[1, 0] = obj((1.0, 1.0, 0.7), 1, 0, 1, 0)
  pred = target.copy()
  pred[0, 2] = obj((-2.0, 2.0, 0.35), 0, 6, 1, 1)  # Wrong colour.
  pred[1, 0] = obj((1.6, 1.0, 0.7), 1, 0, 1, 0)  # 0.6 away.
  pred[1, 5, -1] = 0.7  # A padding row predicted present.
  pred = pred[:, ::-1]
  acc = clevr.attribute_accuracies(pred, target)
  assert acc["acc_color"] == pytest.approx(75.0) and acc["acc_all"] == pytest.approx(75.0)
  for name in ("acc_material", "acc_shape", "acc_size"):
    assert acc[name] == pytest.approx(100.0), name
  assert acc["acc_mask"] == pytest.approx(95.0)
  assert acc["coord_dist"] == pytest.approx(0.6 / 4, rel=1e-5)


def test_the_mlp_decoder_baseline():
  config = clevr_config.get_config("test")
  config.model.decoder = "mlp"
  model = clevr.create_model(config)
  images = np.zeros((2, config.data.image_size, config.data.image_size, 3), np.float32)
  variables = model.init(jax.random.key(0), {"image": images})
  assert "decoder" not in variables["params"]
  assert model.apply(variables, {"image": images}).shape == (2, 10, 19)
  config.model.decoder = "slots"
  with pytest.raises(ValueError, match="config.model.decoder='slots' is not one of"):
    clevr.create_model(config).init(jax.random.key(0), {"image": images})


def test_the_dspn_decoder_is_the_layer_with_dspns_settings():
  """decoder "dspn": model.idspn's options with momentum 0 and backward "unroll" on top; the
  parameters are iDSPN's; a model.idspn value that contradicts DSPN is an error naming it."""
  config = clevr_config.get_config("test")
  config.model.decoder = "dspn"
  model = clevr.create_model(config)
  assert model.idspn["momentum"] == 0.0 and model.idspn["backward"] == "unroll"
  assert model.idspn["clip_norm"] == config.model.idspn.clip_norm
  images = np.zeros((2, config.data.image_size, config.data.image_size, 3), np.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), {"image": images}))
  assert set(variables["params"]["decoder"]) == {"g"}
  config.model.idspn.momentum = 0.7
  with pytest.raises(ValueError, match=r"but config.model.idspn.momentum=0.7: leave it unset "
                                       r"or set it to 0.0"):
    clevr.create_model(config)


def test_restarts_keep_one_of_the_candidate_sets_per_image():
  """``eval.restarts=R`` predicts, per image, one of the R sets that single-start inference
  gives on the batch tiled R times (the same start draws), the one of lowest energy."""
  config = clevr_config.get_config("test")
  rng = np.random.default_rng(0)
  batch = {"image": rng.random((3, config.data.image_size, config.data.image_size, 3),
                               dtype=np.float32)}
  rngs = {"start": jax.random.key(1)}
  single = clevr.create_model(config)
  variables = single.init({"params": jax.random.key(0)} | rngs, batch)
  config.eval.restarts = 4
  multi = clevr.create_model(config)
  pred = np.asarray(multi.apply(variables, batch, rngs=rngs))  # [3, 10, 19]
  tiled = {"image": np.tile(batch["image"], (4, 1, 1, 1))}
  candidates = np.asarray(single.apply(variables, tiled, rngs=rngs)).reshape(4, 3, 10, 19)
  assert not np.allclose(candidates[0], candidates[1])  # The starts matter: a real choice.
  chosen = [int(np.argmin(np.abs(candidates[:, b] - pred[b]).max(axis=(1, 2))))
            for b in range(3)]
  for b, r in enumerate(chosen):
    np.testing.assert_allclose(pred[b], candidates[r, b], rtol=1e-6, atol=1e-7)
  # Each image's energy 0.5 * mean_k (g(Y) - z)^2 at the kept set is the lowest of the four.
  decoder = idspn_jax.IDSPN(set_size=10, set_dim=19, latent=config.model.latent,
                            hidden=config.model.hidden,
                            **clevr.idspn_options(config))
  _, inter = single.apply(variables, tiled, rngs=rngs, capture_intermediates=True,
                          mutable=["intermediates"])
  (z,) = inter["intermediates"]["latent_norm"]["__call__"]  # [12, K]: z, layer-normalised
  energy = decoder.apply({"params": variables["params"]["decoder"]}, z,
                         candidates.reshape(12, 10, 19), method="target_energy").reshape(4, 3)
  assert chosen == [int(i) for i in np.argmin(np.asarray(energy), axis=0)]
  # Training uses one start whatever restarts says.
  train_pred, _ = multi.apply(variables, batch | {"set": np.zeros((3, 10, 19), np.float32)},
                              train=True, rngs=rngs, mutable=["batch_stats", train.AUX_LOSSES])
  assert train_pred.shape == (3, 10, 19)
  config.eval.restarts = 0
  with pytest.raises(ValueError, match="restarts"):
    clevr.create_model(config).apply(variables, batch, rngs=rngs)


def test_the_representation_loss_is_sown_in_training_only():
  """``model.target_energy_weight`` sows weight x the mean energy at the true sets."""
  config = clevr_config.get_config("test")
  target = np.zeros((2, 10, 19), np.float32)
  target[:, :3, -1] = 1.0
  batch = {"image": np.full((2, config.data.image_size, config.data.image_size, 3), 0.5,
                            np.float32), "set": target}
  rngs = {"start": jax.random.key(1)}
  sown = {}
  for weight in (0.5, 1.0):
    config.model.target_energy_weight = weight
    model = clevr.create_model(config)
    variables = model.init({"params": jax.random.key(0)} | rngs, batch)
    _, updates = model.apply(variables, batch, train=True, rngs=rngs,
                             mutable=["batch_stats", train.AUX_LOSSES])
    (sown[weight],) = updates[train.AUX_LOSSES]["target_energy"]
    # Evaluation makes nothing mutable: the model just predicts.
    assert model.apply(variables, batch, rngs=rngs).shape == (2, 10, 19)
  assert float(sown[1.0]) > 0
  np.testing.assert_allclose(sown[0.5], 0.5 * sown[1.0], rtol=1e-5)


def test_projection_matches_the_recorded_pixels(run):
  config, _, _, _ = run
  source = clevr_data.create_clevr_source("synthetic", split="val", root=config.data.root)
  batch = {"set": source.sets}
  size = config.data.image_size
  pixels = clevr.true_pixel_coords(source, batch, size, len(source))
  for i, scene in enumerate(source.scenes):
    coords = np.array([o["3d_coords"] for o in scene["objects"]])
    project = clevr_plots.fit_projection(coords, pixels[i])
    # The nominal camera plus an affine map stays within a few percent of the image.
    np.testing.assert_allclose(project(coords), pixels[i], atol=0.06 * size)


def test_extra_sets_are_evaluated_at_every_evaluation_and_summarized(run):
  _, workdir, _, log = run
  assert "CLEVR extra validation set 'odd': 6 scenes" in log
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  evaluated = [(r["split"], r["step"]) for r in records if r["split"] != "train"]
  # Each set once per evaluation; the summary reports the step-4 rows without scoring again.
  assert evaluated == [("val", 2), ("odd", 2), ("val", 4), ("odd", 4)]
  summary = json.loads((workdir / "summary.json").read_text())
  assert set(summary["odd"]) == set(summary["val"]) == {"loss", *clevr.AP_NAMES,
                                                         *clevr.ATTRIBUTE_METRICS}
  for name in clevr.AP_NAMES:
    assert 0.0 <= summary["odd"][name] <= 100.0, name
  assert all(np.isfinite(v) for v in summary["odd"].values())
  rows = [line.split(" | ")[0] for line in (workdir / "summary.md").read_text().splitlines()]
  assert rows[2:] == ["| val", "| odd"]
  events = list((workdir / "tensorboard").glob("events.*"))
  assert events and b"odd/ap_inf" in b"".join(p.read_bytes() for p in events)


def test_eval_only_on_the_main_folder_and_a_partial_batch(run, tmp_path):
  """eval_only with the main val folder as an extra set ("same") gives the main metrics
  exactly, and a copy of its first 6 scenes ("first6": one batch of 4, one padded) gives the
  predictions of those 6 scenes in the main pass, and their metrics."""
  config, workdir, _, _ = run
  first6 = tmp_path / "first6"
  shutil.copytree(config.data.root, first6)
  path = first6 / "scenes" / "CLEVR_val_scenes.json"
  data = json.loads(path.read_text())
  data["scenes"] = data["scenes"][:6]
  path.write_text(json.dumps(data))
  evaluated = tmp_path / "eval"
  shutil.copytree(workdir, evaluated)
  other = _config(config.data.root)
  other.eval_only = True
  other.eval.extra_val = f"same={config.data.root}, first6={first6}"
  task = clevr.create_task(other)
  assert task.eval_splits == ("val",) and task.extra_eval_splits == ("same", "first6")
  seen = []

  def eval_metrics(preds, batches):
    seen.append((np.concatenate(preds), np.concatenate([b["set"] for b in batches])))
    return clevr.eval_metrics(preds, batches)

  train.train_and_evaluate(other, evaluated, dataclasses.replace(task, eval_metrics=eval_metrics))
  summary = json.loads((evaluated / "summary.json").read_text())
  assert summary["same"] == summary["val"]
  (val_pred, val_set), _, (pred, target) = seen
  assert val_pred.shape[0] == 8 and pred.shape[0] == 6
  np.testing.assert_array_equal(target, val_set[:6])
  np.testing.assert_allclose(pred, val_pred[:6], rtol=1e-6, atol=1e-6)
  expected = clevr.eval_metrics([val_pred[:6]], [{"set": val_set[:6]}])
  for name, value in expected.items():
    assert summary["first6"][name] == pytest.approx(value, abs=1e-6), name
  assert (evaluated / "pictures" / "first6_step0000004.png").stat().st_size > 10_000


def test_extra_set_errors_come_before_the_data_is_rendered(run, tmp_path):
  config, _, _, _ = run
  missing = _config(tmp_path / "synth")
  missing.eval.extra_val = f"official={tmp_path / 'nowhere'}"
  with pytest.raises(scenes.ClevrDataError,
                     match=r"config.eval.extra_val: the set 'official' at .*nowhere: .*does not "
                           r"exist"):
    clevr.create_task(missing)
  train_only = tmp_path / "train_only"
  shutil.copytree(config.data.root, train_only)
  shutil.rmtree(train_only / "images" / "val")
  missing.eval.extra_val = f"official={train_only}"
  with pytest.raises(scenes.ClevrDataError,
                     match=r"config.eval.extra_val: the set 'official' at .*train_only: split "
                           r"'val' has no image folder"):
    clevr.create_task(missing)
  assert not (tmp_path / "synth").exists()


def test_extra_training_scenes_join_the_training_set(run, tmp_path, monkeypatch):
  config, _, _, _ = run
  extra = tmp_path / "extra"
  render.render_dataset(str(extra), splits={"train": 3}, image_size=32, seed=5, num_workers=0)
  other = _config(config.data.root)
  other.data.extra_train = str(extra)
  other.data.extra_train_repeat = 2
  seen = []
  create_batches = clevr.create_batches

  def spy(cfg, source, *, training, split=None):
    if training:
      seen.append(source)
    return create_batches(cfg, source, training=training, split=split)

  monkeypatch.setattr(clevr, "create_batches", spy)
  clevr.create_task(other)
  (source,) = seen
  assert isinstance(source, clevr_data.MixedSource)
  n = config.data.train_size
  assert len(source) == n + 2 * 3
  main = clevr_data.ClevrFolderSource(config.data.root, "train")
  added = clevr_data.ClevrFolderSource(str(extra), "train")
  for index, (expected, local) in {0: (main, 0), n - 1: (main, n - 1), n + 1: (added, 1),
                                   n + 3 + 1: (added, 1), n + 5: (added, 2)}.items():
    image, objects = source.load(index, image_size=32)
    want_image, want_objects = expected.load(local, image_size=32)
    np.testing.assert_array_equal(image, want_image)
    np.testing.assert_array_equal(objects, want_objects)
  # A missing folder is named before anything is rendered.
  missing = _config(tmp_path / "synth")
  missing.data.extra_train = str(tmp_path / "nowhere")
  with pytest.raises(scenes.ClevrDataError,
                     match=r"config.data.extra_train at .*nowhere: .*does not exist"):
    clevr.create_task(missing)
  assert not (tmp_path / "synth").exists()


def test_extra_set_folders_resolve_from_the_repository_root():
  config = clevr_config.get_config("test")
  assert clevr.extra_val_sets(config) == {}
  config.eval.extra_val = "official=experiments/clevr/blender_val, home=~/CLEVR_v1.0,abs=/data"
  assert clevr.extra_val_sets(config) == {
    "official": str(clevr.REPO_ROOT / "experiments" / "clevr" / "blender_val"),
    "home": os.path.expanduser("~/CLEVR_v1.0"), "abs": "/data"}
  for empty in ("", " ", "None"):
    config.eval.extra_val = empty
    assert clevr.extra_val_sets(config) == {}
  assert clevr.extra_train_folder(config) is None
  config.data.extra_train = "experiments/clevr/blender_train"
  assert clevr.extra_train_folder(config) == str(
    clevr.REPO_ROOT / "experiments" / "clevr" / "blender_train")


def test_missing_folder_or_split_fails_before_training(run, tmp_path):
  config, _, _, _ = run
  with pytest.raises(scenes.ClevrDataError, match="does not exist"):
    clevr.create_task(_config(tmp_path / "nowhere", source="folder"))
  root = tmp_path / "no_val"
  shutil.copytree(config.data.root, root)
  shutil.rmtree(root / "images" / "val")
  with pytest.raises(scenes.ClevrDataError, match="split 'val' has no image folder"):
    clevr.create_task(_config(root, source="folder"))
  no_root = clevr_config.get_config("test")
  no_root.data.source = "folder"
  no_root.data.root = None
  with pytest.raises(ValueError, match="needs --config.data.root"):
    clevr.create_task(no_root)


def test_a_scene_with_too_many_objects(run, tmp_path):
  config, _, _, _ = run
  root = tmp_path / "crowded"
  shutil.copytree(config.data.root, root)
  path = root / "scenes" / "CLEVR_train_scenes.json"
  data = json.loads(path.read_text())
  data["scenes"][3]["objects"] = data["scenes"][3]["objects"] * 4  # At least 12 objects.
  path.write_text(json.dumps(data))
  with pytest.raises(scenes.TooManyObjectsError, match="more than the set size 10"):
    clevr.create_task(_config(root, source="folder"))
  task = clevr.create_task(_config(root, source="folder", on_too_many_objects="skip"))
  batch = next(task.train_batches(0))
  assert batch["set"].shape == (config.train.batch_size, 10, 19)


def test_synthetic_settings_clash_is_explained(run):
  config, _, _, _ = run
  other = _config(config.data.root, image_size=24)
  with pytest.raises(scenes.ClevrDataError, match="--config.data.root"):
    clevr.create_task(other)


def test_the_committed_blender_scenes_are_what_small_reads():
  """:small's official validation set and its Blender training scenes are in the repository,
  readable by the folder source at its image size, and share no scene."""
  config = clevr_config.get_config("small")
  train_root = clevr.extra_train_folder(config)
  assert train_root == str(clevr.REPO_ROOT / "experiments" / "clevr" / "blender_train")
  train = clevr_data.ClevrFolderSource(train_root, "train")
  val = clevr_data.ClevrFolderSource(clevr.extra_val_sets(config)["official"], "val")
  assert (len(train), len(val)) == (1500, 500)
  assert (train.info["seed"], val.info["seed"]) == (1, 0)
  for source in (train, val):
    image, _ = source.load(len(source) - 1, image_size=config.data.image_size)
    assert image.shape == (96, 96, 3) and image.std() > 10
  def key(scene):
    return tuple(tuple(o["3d_coords"]) for o in scene["objects"])
  assert not {key(s) for s in train.scenes} & {key(s) for s in val.scenes}


def test_configs():
  assert clevr_config.get_config().data.source == "synthetic"
  small = clevr_config.get_config("small")
  clevr.validate_config(small)  # Its encoder options fit the encoder.
  assert small.model.encoder_options.strides == (2, 2, 2, 1)
  assert clevr.extra_val_sets(clevr_config.get_config("small")) == {
    "official": str(clevr.REPO_ROOT / "experiments" / "clevr" / "blender_val")}
  for variant in ("paper128", "paper256", "test"):
    assert clevr_config.get_config(variant).eval.extra_val is None
  for variant, size in (("paper128", 128), ("paper256", 256)):
    config = clevr_config.get_config(variant)
    assert (config.data.image_size, config.model.encoder, config.train.batch_size) == (
      size, "resnet18", 128)
    assert config.model.hidden == config.model.latent == 512
    options = clevr.idspn_options(config)
    assert options["clip_norm"] == 10 and options["steps"] == 40
    assert options["learning_rate"] == 1.0 and models.setting(options, "momentum") == 0.9
    assert models.setting(options, "backward") == "approx"
    assert config.train.inner_steps_schedule and config.data.source == "tfds"
    assert config.train.lr_drop_step == 90 * config.train.steps // 100
  with pytest.raises(ValueError, match="unknown variant"):
    clevr_config.get_config("huge")


@pytest.mark.parametrize("values, message", [
  (dict(data__source="tfds_array"), r"config.data.source='tfds_array' is not one of"),
  (dict(data__on_bad_image="ignore"), r"config.data.on_bad_image='ignore' is not one of"),
  (dict(data__image_size=0), r"config.data.image_size must be a positive integer"),
  (dict(eval__restarts=0), r"config.eval.restarts must be a positive integer"),
  (dict(model__encoder="resnet50"), r"config.model.encoder='resnet50' is not one of"),
  (dict(model__encoder_options__conv_impl="cudnn"),
   r"config.model.encoder_options.conv_impl='cudnn' is not one of"),
  (dict(model__encoder="resnet18"), r"config.model.encoder_options \(batch_norm, conv_impl, "
                                    r"head, widths\) do not fit the 'resnet18' encoder"),
  (dict(model__encoder_options__strides=(2, 2, 1)),
   r"config.model.encoder_options.strides must give 1 or 2 for each of the 2 widths \(8, 16\), "
   r"got \(2, 2, 1\)"),
  (dict(model__encoder_options__strides=(2, 3)), r"encoder_options.strides .* got \(2, 3\)"),
  (dict(model__decoder="mlp", model__target_energy_weight=0.1),
   r"target_energy_weight needs the inner loop's energy"),
  (dict(model__idspn__backward="implicit"), r"config.model.idspn.backward='implicit' is not"),
  (dict(eval__final_checkpoint="bset"), r"config.eval.final_checkpoint='bset' is not one of"),
  (dict(eval__extra_val="official"), r"config.eval.extra_val='official': 'official' is not "
                                     r"name=folder \(expected 'name=folder\[,name=folder"),
  (dict(eval__extra_val="a=x,=y"), r"config.eval.extra_val='a=x,=y': '=y' is not name=folder"),
  (dict(eval__extra_val="2d=x"), r"config.eval.extra_val='2d=x': the name '2d' must be a letter"),
  (dict(eval__extra_val="a=x,a=y"), r"the name 'a' is used more than once"),
  (dict(eval__extra_val="val=x"), r"config.eval.extra_val='val=x': the name 'val' is taken"),
  (dict(data__extra_train_repeat=0), r"config.data.extra_train_repeat"),
])
def test_config_errors_come_before_the_data_is_rendered(tmp_path, values, message):
  config = _config(tmp_path / "synth")
  for dotted, value in values.items():
    *sections, key = dotted.split("__")
    node = config
    for section in sections:
      node = node[section]
    node[key] = value
  with pytest.raises(ValueError, match=message):
    clevr.create_task(config)
  assert not (tmp_path / "synth").exists()


def test_plot_without_pixel_coordinates(tmp_path):
  rng = np.random.default_rng(0)
  scene = {"objects": [
    {"3d_coords": [x, -x, 0.35], "material": "metal", "color": "red", "shape": "cube",
     "size": "small"} for x in (-2.0, 0.0, 2.0)]}
  target = scenes.scene_to_set(scene)[None]  # [1, 10, 19]
  pred = target + 0.05 * rng.standard_normal(target.shape)
  path = pathlib.Path(tmp_path) / "p.png"
  clevr_plots.plot_predictions(pred, {"image": rng.uniform(size=(1, 16, 16, 3)), "set": target},
                               path)
  assert path.stat().st_size > 5_000
