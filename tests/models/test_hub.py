"""Checkpoints on the Hugging Face Hub, tested without a network: a Hub id resolves from a local
cache in the layout ``huggingface_hub`` writes, and ``push_to_hub`` goes to a stand-in for the
upload API that records what it was given."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")

from uncertainty_rrsis.inference import ReferringSegmenter  # noqa: E402
from uncertainty_rrsis.models import CroBIMU, push_to_hub, resolve_pretrained  # noqa: E402
from uncertainty_rrsis.models.hub import is_hub_id  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def saved(tiny_config, tiny_tokenizer, tmp_path_factory):
    """A checkpoint folder with a tokenizer, and the model that wrote it."""
    torch.manual_seed(0)
    model = CroBIMU(tiny_config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model.save_pretrained(tmp_path_factory.mktemp("hub") / "ckpt", tokenizer=tiny_tokenizer), model


def hub_cache(folder: Path, root: Path, repo_id: str = "org/tiny-crobimu") -> Path:
    """A Hub cache holding ``folder`` as ``repo_id`` at ``main`` (refs/main -> snapshots/<commit>)."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    return root


def tree(folder: Path) -> dict[str, object]:
    """Every file's bytes; a ``.safetensors`` file as (header, data), its JSON header parsed, since
    safetensors writes the keys of its metadata in no fixed order."""
    files: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.suffix == ".safetensors":
                n = int.from_bytes(data[:8], "little")
                data = (json.loads(data[8:8 + n]), data[8 + n:])
            files[str(p.relative_to(folder))] = data
    return files


def test_hub_ids_and_paths_are_told_apart():
    assert is_hub_id("org/name") and is_hub_id("name") and is_hub_id("Org-1/name_2.v3")
    for path in ("runs/default/checkpoints/best", "./runs", "/abs/path", "org/../x", "a//b", "org/name/"):
        assert not is_hub_id(path), path


def test_a_hub_id_loads_from_the_cache_without_network(saved, tmp_path):
    folder, model = saved
    cache = hub_cache(folder, tmp_path / "cache")
    loaded = CroBIMU.from_pretrained("org/tiny-crobimu", cache_dir=cache, local_files_only=True)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    segmenter = ReferringSegmenter.from_pretrained(
        "org/tiny-crobimu", hub={"cache_dir": cache, "local_files_only": True})
    assert segmenter.tokenizer("a ship")["input_ids"]  # the tokenizer/ folder came with it


def test_hf_hub_offline_resolves_from_the_cache(saved, tmp_path):
    """With ``HF_HUB_OFFLINE=1`` (read when huggingface_hub is imported) a cached id loads and a
    missing one fails with a message that says what to do, naming no network error."""
    folder, _ = saved
    cache = hub_cache(folder, tmp_path / "cache")
    code = (
        "import sys\n"
        "from uncertainty_rrsis.models import CroBIMU\n"
        f"m = CroBIMU.from_pretrained('org/tiny-crobimu', cache_dir={str(cache)!r})\n"
        "print('loaded', m.num_parameters()['total'])\n"
        "try:\n"
        f"    CroBIMU.from_pretrained('org/missing', cache_dir={str(cache)!r})\n"
        "except FileNotFoundError as err:\n"
        "    print('error:', err)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "loaded" in out.stdout
    assert "org/missing is not a local folder and not in the Hub cache" in out.stdout
    assert "hf download org/missing" in out.stdout


def test_missing_paths_and_ids_say_what_to_give(saved, tmp_path):
    folder, _ = saved
    with pytest.raises(FileNotFoundError, match="does not exist; expected a checkpoint folder"):
        CroBIMU.from_pretrained(tmp_path / "runs" / "nothing" / "here")
    with pytest.raises(FileNotFoundError, match="not in the Hub cache"):
        resolve_pretrained("org/absent", cache_dir=tmp_path / "empty", local_files_only=True)
    assert resolve_pretrained(folder) == folder  # a local folder is never looked up on the Hub
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    cache = hub_cache(other, tmp_path / "cache", "org/not-ours")
    with pytest.raises(FileNotFoundError, match="has no model.safetensors: it is not an uncertainty-rrsis"):
        resolve_pretrained("org/not-ours", cache_dir=cache, local_files_only=True)


class RecordingApi:
    """Stands in for ``huggingface_hub.HfApi``: records the calls and the uploaded folder's files."""

    calls: list[tuple[str, dict]] = []

    def __init__(self, **kwargs):
        self.calls.append(("init", kwargs))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, *, folder_path, **kwargs):
        self.calls.append(("upload_folder", {**kwargs, "files": tree(Path(folder_path))}))
        return "commit-info"


def test_push_to_hub_uploads_what_save_pretrained_writes(saved, tmp_path, tiny_tokenizer, monkeypatch):
    import huggingface_hub

    folder, model = saved
    RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    assert model.push_to_hub("org/tiny", tokenizer=tiny_tokenizer, token="hf_x", private=True) == "commit-info"
    (_, init), (_, create), (_, upload) = RecordingApi.calls
    assert init["token"] == "hf_x" and create == {"repo_id": "org/tiny", "repo_type": "model", "private": True,
                                                   "exist_ok": True}
    assert upload["repo_id"] == "org/tiny" and upload["create_pr"] is False
    assert upload["files"] == tree(folder)  # byte for byte the folder save_pretrained writes
    assert "tokenizer/*" in upload["delete_patterns"]  # stale checkpoint files go, nothing else

    RecordingApi.calls = []  # an existing folder (e.g. a run's checkpoints/best) goes as it is
    push_to_hub(folder, "org/tiny", commit_message="best on val", revision="v1", create_pr=True)
    upload = RecordingApi.calls[-1][1]
    assert upload["files"] == tree(folder) and upload["commit_message"] == "best on val"
    assert upload["revision"] == "v1" and upload["create_pr"] is True
    with pytest.raises(FileNotFoundError, match="has no config.json or model.safetensors"):
        push_to_hub(tmp_path, "org/tiny")
    with pytest.raises(ValueError, match="expected a Hub repository id"):
        push_to_hub(folder, "not a/valid id")


def test_a_pretrained_text_encoder_by_hub_id_comes_from_the_cache_offline(tiny_bert_dir, tmp_path):
    """``--text-weights org/name``: a pretrained text encoder named by its Hub id (as all-MiniLM-L6-v2
    is, for the studies) is read from the Hugging Face cache, with ``HF_HUB_OFFLINE=1``."""
    cache = hub_cache(tiny_bert_dir, tmp_path / "hub", repo_id="org/tiny-bert")
    code = (
        "import sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from pathlib import Path\n"
        "from helpers.tiny import TINY_VOCAB, tiny_train_config\n"
        "from uncertainty_rrsis.training import build_trainer\n"
        f"cfg = tiny_train_config(Path({str(tmp_path)!r}), 'org/tiny-bert')\n"
        "trainer = build_trainer(cfg)\n"
        "text = trainer.model.config.text\n"
        "assert (text.name, text.pretrained) == ('org/tiny-bert', True), text\n"
        "assert (trainer.model.text.hidden_dim, len(trainer.tokenizer)) == (32, len(TINY_VOCAB))\n"
        "print('built')\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "built" in out.stdout
