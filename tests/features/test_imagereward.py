"""ImageReward v1.0 on a tiny random model in the published layout (tests/support/imagereward_fixtures.py), against
the reference package's own ``ImageReward.score`` (its vit.py, med.py, MLP, transform and constants) on the same
images and prompts. Tokenisation is transformers' BertTokenizer on both sides (the reference builds the same one).

Tolerance: rewards agree to 1.3e-6 (measured: float32 through two different attention implementations), asserted
at 1e-5.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import harness
from harness.api.checks import require_for_metrics
from harness.errors import HarnessError, ProtocolError
from harness.features import get_extractor, loaded_extractor
from harness.features.imagereward import (
    CONTEXT_LENGTH,
    IGNORED,
    ImageRewardNet,
    ImageRewardV1,
    _configs,
    _translate,
    fitted_state,
    published_to_ours,
)
from harness.features.weights import WeightsNotFound, entries_for_extractor
from harness.metrics import ShardFeatures, get_metric
from harness.run.extract import ExtractTask, _shard_features, extract_shard, feature_path, features_digest
from harness.store import encode_png, manifest_path, read_manifest, verified_images, write_manifest
from harness.types import SampleRecord, ShardManifest
from tests.support.imagereward_fixtures import reference_modules, reference_rewards

ATOL = 1e-5
# [CLS] + 33 words + [SEP] = 35 tokens: read whole; one word more is cut (the boundary ImageReward truncates at)
AT_LIMIT = " ".join(["cat"] * 33)
PROMPTS = ["A photo of a RED cat.", "two blue circles on a mat", AT_LIMIT, AT_LIMIT + " dog",
           "a small boat at sea, very large shark"]


def _images(n: int, seed: int = 0) -> np.ndarray:
    """Non-square, not 224: the resize of the short side and the centre crop both act."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(n, 5, 7, 3))
    up = np.kron(coarse, np.ones((1, 48, 40, 1)))
    return np.clip(up + rng.normal(0, 25, size=up.shape), 0, 255).round().astype(np.uint8)


def test_extractor_and_metric_equal_the_reference_package(imagereward_installed):
    images = _images(len(PROMPTS))
    reference = reference_rewards(imagereward_installed["reference"], images, PROMPTS)
    assert np.ptp(reference) > 0.1  # distinct per-pair rewards: a mix-up of images or prompts would show
    ext = loaded_extractor("imagereward-v1.0", "cpu")
    ext.batch_size = 2  # batches of 2, 2, 1: padding, batching and the last partial batch
    rewards = ext.extract(images, prompts=PROMPTS)["reward"]
    assert rewards.shape == (len(PROMPTS),) and rewards.dtype == np.float32
    np.testing.assert_allclose(rewards, reference, rtol=0, atol=ATOL)
    assert ext.truncated(PROMPTS) == [False, False, False, True, False]

    shards = [ShardFeatures(rewards[:2], (None, None), tuple(PROMPTS[:2])),
              ShardFeatures(rewards[2:], (None,) * 3, tuple(PROMPTS[2:]))]
    result = get_metric("imagereward").compute(shards)
    assert result.value == pytest.approx(reference.mean(), abs=ATOL) and result.n == len(PROMPTS)
    half = 1.959963984540054 * reference.std(ddof=1) / np.sqrt(len(PROMPTS))
    assert result.ci_low == pytest.approx(reference.mean() - half, abs=ATOL)
    assert result.details["truncated_prompts"] == result.details["truncated_samples"] == 1
    assert result.details["context_length"] == CONTEXT_LENGTH == 35


def test_the_prompt_changes_the_reward_as_in_the_reference(imagereward_installed):
    """Same image, every prompt: the cross-attention reads both (the reason the extractor needs prompts)."""
    image = np.repeat(_images(1, seed=3), len(PROMPTS), axis=0)
    reference = reference_rewards(imagereward_installed["reference"], image, PROMPTS)
    ours = loaded_extractor("imagereward-v1.0", "cpu").extract(image, prompts=PROMPTS)["reward"]
    assert np.ptp(reference) > 0.1
    np.testing.assert_allclose(ours, reference, rtol=0, atol=ATOL)


def _published_state(installed) -> dict[str, torch.Tensor]:
    return torch.load(Path(installed["root"]) / "imagereward-v1.0" / "ImageReward.pt", weights_only=True)


def test_key_map_uses_or_names_every_published_key(imagereward_installed):
    state = _published_state(imagereward_installed)
    assert set(state) == set(imagereward_installed["reference"].state_dict())  # the layout RM.load reads
    used = published_to_ours(state, "t")
    assert len(used) + len(IGNORED) == len(state) and set(IGNORED) <= set(state)
    assert all(_translate(_translate(k, True), False) == k for k in state if k not in IGNORED)
    net_keys = set(loaded_extractor("imagereward-v1.0", "cpu")._net.state_dict())
    assert set(used) == net_keys  # every parameter and buffer of ours comes from the file


def test_layer_norm_epsilons_are_the_reference_modules(imagereward_installed):
    """eps 1e-6 (timm ViT) vs 1e-12 (BERT) moves a reward by less than the tolerance on random weights, so the
    modules themselves are compared: the same multiset of LayerNorm eps in each tower."""
    reference, ours = imagereward_installed["reference"].blip, loaded_extractor("imagereward-v1.0", "cpu")._net

    def eps(module: torch.nn.Module) -> list[float]:
        return sorted(m.eps for m in module.modules() if isinstance(m, torch.nn.LayerNorm))

    assert eps(ours.vision) == eps(reference.visual_encoder) and set(eps(ours.vision)) == {1e-6}
    assert eps(ours.text) == eps(reference.text_encoder) and set(eps(ours.text)) == {1e-12}


# THUDM/ImageReward's med_config.json: BLIP's BERT-base text config, the encoder width ViT-L's
PUBLISHED_MED_CONFIG = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
                        "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02,
                        "intermediate_size": 3072, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
                        "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0,
                        "type_vocab_size": 2, "vocab_size": 30524, "encoder_width": 1024, "add_cross_attention": True}


def test_the_full_size_published_layout_fits(tmp_path, monkeypatch):
    """ImageReward at its real size (vit='large'), built by the reference package on the meta device (shapes, no
    memory): the configs read from it are ViT-L/16 and BERT-base, and every key maps onto ours at its shape."""
    mods = reference_modules()
    (tmp_path / "med_config.json").write_text(json.dumps(PUBLISHED_MED_CONFIG))
    monkeypatch.setattr(mods["blip_pretrain"], "init_tokenizer", lambda: None)  # the tokenizer holds no weights
    real_linspace = torch.linspace  # vit.py reads its stochastic-depth rates with .item(): those stay on the CPU
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: real_linspace(*a, **{**k, "device": "cpu"}))
    with torch.device("meta"):
        state = mods["image_reward"].ImageReward(med_config=str(tmp_path / "med_config.json")).state_dict()
    monkeypatch.undo()
    vision, text = _configs(state, PUBLISHED_MED_CONFIG, "t")
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads, vision.intermediate_size,
            vision.patch_size, vision.layer_norm_eps) == (1024, 24, 16, 4096, 16, 1e-6)
    assert (text.hidden_size, text.num_hidden_layers, text.encoder_hidden_size, text.vocab_size) == (768, 12, 1024,
                                                                                                      30524)
    with torch.device("meta"):
        net = ImageRewardNet(vision, text)
    ours = fitted_state(net, state, "t")
    assert len(ours) + len(IGNORED) == len(state) == 625
    assert sum(v.numel() for v in ours.values()) == sum(p.numel() for p in net.parameters()) == 446_206_689


@pytest.mark.parametrize("change, named", [
    ("drop blip.visual_encoder.blocks.1.mlp.fc2.bias", "missing blip.visual_encoder.blocks.1.mlp.fc2.bias"),
    ("drop mlp.layers.7.weight", "missing mlp.layers.7.weight"),
    ("drop blip.text_encoder.encoder.layer.1.crossattention.self.key.weight",
     "missing blip.text_encoder.encoder.layer.1.crossattention.self.key.weight"),
    ("add blip.text_encoder.pooler.dense.weight", "unexpected blip.text_encoder.pooler.dense.weight"),
    ("add blip.visual_encoder.head.weight", "neither used nor ignored, e.g. blip.visual_encoder.head.weight"),
    ("add blip.itm_head.weight", "neither used nor ignored, e.g. blip.itm_head.weight"),
    ("shape blip.visual_encoder.norm.weight", "blip.visual_encoder.norm.weight has shape (127,)"),
    ("shape blip.text_encoder.embeddings.position_ids", "position_ids is not 0..39"),
])
def test_a_missing_extra_or_misshapen_key_is_refused_by_name(imagereward_files, tmp_path, change, named):
    state = _published_state(imagereward_files)
    action, key = change.split(" ")
    if action == "drop":
        del state[key]
    elif action == "add":
        state[key] = torch.zeros(3)
    elif key.endswith("position_ids"):
        state[key] = state[key].flip(-1)
    else:
        state[key] = state[key][:-1]
    model = tmp_path / "model"
    shutil.copytree(imagereward_files["root"] / "imagereward-v1.0", model)
    torch.save(state, model / "ImageReward.pt")
    ext = ImageRewardV1(model_dir=model, tokenizer_dir=imagereward_files["root"] / "bert-base-uncased-tokenizer")
    with pytest.raises(HarnessError, match=named.replace("(", r"\(").replace(")", r"\)")):
        ext.load()


def test_a_tokenizer_of_another_vocabulary_is_refused(imagereward_files, tmp_path):
    tokenizer = shutil.copytree(imagereward_files["root"] / "bert-base-uncased-tokenizer", tmp_path / "tok")
    with (tokenizer / "vocab.txt").open("a") as f:
        f.write("zebra\n")
    ext = ImageRewardV1(model_dir=imagereward_files["root"] / "imagereward-v1.0", tokenizer_dir=tokenizer)
    with pytest.raises(HarnessError, match="the tokenizer has 35 tokens with BLIP's .DEC./.ENC., med_config.json 34"):
        ext.load()


def test_only_the_verified_tokenizer_files_are_read(imagereward_files, tmp_path):
    """A hub snapshot holds more files (tokenizer.json) than the digests cover: none of them is read."""
    tokenizer = shutil.copytree(imagereward_files["root"] / "bert-base-uncased-tokenizer", tmp_path / "tok")
    (tokenizer / "tokenizer.json").write_text("not a tokenizer")
    ext = ImageRewardV1(model_dir=imagereward_files["root"] / "imagereward-v1.0", tokenizer_dir=tokenizer)
    ext.load()
    images = _images(2)
    want = reference_rewards(imagereward_files["reference"], images, PROMPTS[:2])
    np.testing.assert_allclose(ext.extract(images, prompts=PROMPTS[:2])["reward"], want, rtol=0, atol=ATOL)


def test_without_weights_nothing_is_computed(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert entries_for_extractor("imagereward-v1.0") == ["imagereward-v1.0", "bert-base-uncased-tokenizer"]
    with pytest.raises(WeightsNotFound, match=r"not computed: weights not found \(harness weights fetch "
                                              r"imagereward-v1.0\); needs ImageReward.pt, med_config.json in"):
        get_extractor("imagereward-v1.0").load()
    with pytest.raises(WeightsNotFound, match=r"metric 'imagereward' \(extractor 'imagereward-v1.0'\): not computed"):
        require_for_metrics(["imagereward"])  # what `harness run` checks before any compute
    (tmp_path / "imagereward-v1.0").mkdir()  # the model without the tokenizer is not enough either
    for name in ("ImageReward.pt", "med_config.json"):
        (tmp_path / "imagereward-v1.0" / name).write_bytes(b"x")
    with pytest.raises(WeightsNotFound, match=r"harness weights fetch bert-base-uncased-tokenizer\); needs "
                                              r"vocab.txt, tokenizer_config.json"):
        get_extractor("imagereward-v1.0").load()


def test_images_without_prompts_are_refused_by_name(imagereward_installed):
    ext = loaded_extractor("imagereward-v1.0", "cpu")
    images = _images(2)
    for prompts, message in ((None, "scores \\(image, prompt\\) pairs: extract\\(\\) needs prompts"),
                             ("a cat", "prompts must be a list of strings, one per image; got str"),
                             (["a cat"], "1 prompts for 2 images"), (["a cat", None], "sample 1 has no prompt")):
        with pytest.raises(HarnessError, match=f"extractor 'imagereward-v1.0'.*{message}"):
            ext.extract(images, prompts=prompts)


def test_a_dataset_without_prompts_is_refused_at_plan_time():
    from harness.plan.protocol import make_plan, protocol_from_dict

    raw = {"name": "p", "models": [{"card": "student-mnist", "cfg": [None]}], "datasets": ["mnist"], "steps": [1],
           "n": 8, "reference_n": 100, "metrics": ["imagereward"]}
    with pytest.raises(ProtocolError, match="metric 'imagereward' needs prompts for every sample; dataset 'mnist'"):
        make_plan(protocol_from_dict(raw))


def test_harness_score_refuses_it_before_decoding(tmp_path):
    """`harness score` takes images without prompts: the call site that cannot feed the extractor refuses."""
    from harness.api.scoring import score_images

    folder = tmp_path / "images"
    folder.mkdir()
    for k, image in enumerate(_images(2)):
        (folder / f"{k}.png").write_bytes(encode_png(image))
    with pytest.raises(HarnessError, match="--metrics imagereward: need a prompt per image, which `harness score` "
                                           "does not take"):
        score_images(folder, ["imagereward"], None, tmp_path / "cache")


def test_reference_statistics_cannot_feed_it_prompts_and_say_so(imagereward_installed):
    """The reference stage streams images alone: were a metric to ask it for this extractor's rows, the extractor
    refuses by name instead of scoring images against no prompt."""
    from harness.datasets import get_dataset
    from harness.references.artefacts import compute_reference_stats

    ext = loaded_extractor("imagereward-v1.0", "cpu")
    with pytest.raises(HarnessError, match="extractor 'imagereward-v1.0' scores .image, prompt. pairs"):
        compute_reference_stats(get_dataset("mnist-5k"), 4, ext, output="reward", progress=False)


def _shard(directory: Path, images: np.ndarray, prompts: list[str | None]) -> ShardManifest:
    """A finished shard on disk: PNGs and a manifest recording each sample's prompt."""
    (directory / "images").mkdir(parents=True)
    samples = []
    for k, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
        data = encode_png(image)
        (directory / "images" / f"{k:07d}.png").write_bytes(data)
        samples.append(SampleRecord(index=k, seed=k, label=None, prompt=prompt, file=f"images/{k:07d}.png",
                                    sha256=hashlib.sha256(data).hexdigest(), nfe=1, seconds=0.0))
    manifest = ShardManifest(cell_id=directory.name, start=0, stop=len(images), samples=tuple(samples),
                             harness_version="test")
    write_manifest(manifest_path(directory, 0, len(images)), manifest)
    return manifest


def test_the_feature_cache_is_keyed_by_the_prompts_too(imagereward_installed, tmp_path):
    """Two shards with the same pixels and other prompts: each is extracted with its own prompts and cached apart
    (a pixels-only key would hand the second shard the first one's rewards)."""
    images, cache = _images(3, seed=5), tmp_path / "cache"
    prompt_sets = (PROMPTS[:3], PROMPTS[2:5])
    manifests = [_shard(tmp_path / f"cell{k}", images, list(p)) for k, p in enumerate(prompt_sets)]
    assert manifests[0].content_digest == manifests[1].content_digest  # the same pixels
    for k in range(2):
        task = ExtractTask(str(tmp_path / f"cell{k}"), 0, 3, ("imagereward-v1.0",), str(cache))
        assert extract_shard(task) == 1  # computed, not found in the cache
        assert extract_shard(task) == 0  # now cached under its own key
    key = get_extractor("imagereward-v1.0").spec.key
    paths = {feature_path(cache, key, features_digest(m, "imagereward-v1.0")) for m in manifests}
    assert len(paths) == 2 and all(p.exists() for p in paths)
    for manifest, prompts in zip(manifests, prompt_sets, strict=True):
        (shard,) = _shard_features(cache, key, "reward", [manifest], "imagereward-v1.0")
        assert shard.prompts == tuple(prompts)
        want = reference_rewards(imagereward_installed["reference"], images, list(prompts))
        np.testing.assert_allclose(shard.features, want, rtol=0, atol=ATOL)


def test_a_shard_sample_without_a_prompt_is_refused(imagereward_installed, tmp_path):
    _shard(tmp_path / "cell", _images(2), ["a cat", None])
    task = ExtractTask(str(tmp_path / "cell"), 0, 2, ("imagereward-v1.0",), str(tmp_path / "cache"))
    with pytest.raises(HarnessError, match="extractor 'imagereward-v1.0': sample 1 has no prompt"):
        extract_shard(task)
    assert not (tmp_path / "cache" / "features").exists()


def test_metric_refuses_features_that_are_not_one_reward_per_sample(imagereward_installed):
    shards = [ShardFeatures(np.zeros((2, 3), np.float32), (None, None), ("a cat", "a dog"))]
    with pytest.raises(HarnessError, match="imagereward: features of 3 columns per sample; expected one reward"):
        get_metric("imagereward").compute(shards)


def test_listed_with_its_source_and_variant():
    from harness.metrics import metric_lines

    (line,) = [x for x in metric_lines() if x.startswith("imagereward ")]
    assert "reads imagereward-v1.0/reward" in line and "higher is better, no reference" in line
    assert "prompt-35-token-truncation/fp32" in line and "ImageReward-v1.0" in line and "Xu et al. 2023" in line


def test_med_config_is_read_not_assumed(imagereward_files, tmp_path):
    """A text tower whose config says 'no cross-attention' is not ImageReward's: refused, never half-loaded."""
    model = shutil.copytree(imagereward_files["root"] / "imagereward-v1.0", tmp_path / "model")
    config = json.loads((model / "med_config.json").read_text())
    (model / "med_config.json").write_text(json.dumps({**config, "add_cross_attention": False}))
    ext = ImageRewardV1(model_dir=model, tokenizer_dir=imagereward_files["root"] / "bert-base-uncased-tokenizer")
    with pytest.raises(HarnessError, match="med_config.json lacks add_cross_attention: true"):
        ext.load()


def prompt_scene(conditions, steps, cfg, generators) -> np.ndarray:
    """A text-conditioned callable model (the e2e test's): noise from each image's generator, tinted by its prompt."""
    out = np.zeros((len(conditions), 64, 64, 3), np.uint8)
    for i, (prompt, gen) in enumerate(zip(conditions, generators, strict=True)):
        noise = torch.rand((64, 64, 3), generator=gen, dtype=torch.float64).numpy()
        tint = np.array([len(prompt) % 7, len(prompt) % 5, len(prompt) % 3]) / 7
        out[i] = np.rint(255 * np.clip(0.6 * noise + 0.4 * tint, 0, 1)).astype(np.uint8)
    return out


def test_a_protocol_scores_each_sample_with_its_own_prompt(imagereward_installed, tmp_path, monkeypatch):
    """plan → generate → extract (the shard's prompts) → score through ``harness.run``: the row equals the
    reference package's mean reward over the written images and their recorded prompts."""
    table = tmp_path / "DrawBench.csv"
    with table.open("w", newline="") as f:
        csv.writer(f).writerows([("Prompts", "Category"), *((p, "test") for p in PROMPTS)])
    monkeypatch.setenv("HARNESS_DATASET_DRAWBENCH", str(table))
    card = tmp_path / "prompt-scene.yaml"
    card.write_text(yaml.safe_dump({"name": "prompt-scene", "family": "callable", "params": {
        "entry": f"{__name__}:prompt_scene", "nfe": {"per_step": 1, "cfg_doubles": False},
        "capabilities": {"conditioning": "text", "guidance": "none", "min_steps": 1, "max_steps": 1,
                         "resolution": 64}}}))
    protocol = {"name": "imagereward-e2e", "models": [str(card)], "datasets": ["drawbench"], "steps": [1],
                "cfg": [None], "n": 5, "shard_size": 2, "batch_size": 2, "metrics": ["imagereward"], "bootstrap": 20}
    done = harness.run(protocol, results=tmp_path / "run", executor="debug", cache=tmp_path / "cache")
    (row,) = done.results.itertuples()
    images, prompts = [], []
    for path in sorted((tmp_path / "run").glob("cells/*/shards/*.json")):
        manifest = read_manifest(path)
        images.append(verified_images(path.parent.parent, manifest))
        prompts += [s.prompt for s in manifest.samples]
    assert sorted(prompts) == sorted(PROMPTS)  # every sample was asked for (and recorded with) its own prompt
    want = reference_rewards(imagereward_installed["reference"], np.concatenate(images), prompts)
    assert row.metric == "imagereward" and row.n == 5 and row.variant == get_metric("imagereward").variant
    assert row.value == pytest.approx(want.mean(), abs=ATOL)
    assert row.ci_low < row.value < row.ci_high
