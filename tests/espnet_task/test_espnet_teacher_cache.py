"""ESPnet reads the teacher-target cache built once by ``python -m kd_core.cache build`` instead of the teacher."""
import pytest
import torch
from conftest import run_espnet
from test_espnet_kd_train import CHUNKED, _train

pytestmark = pytest.mark.slow


def _train_stats(out):
    return torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)["reporter"]["stats"][1]["train"]


def test_cache_built_by_cli_replaces_the_teacher_exactly(espnet_data, tiny_teachers, tmp_path):
    hubert = tiny_teachers["fairseq_hubert"]
    kd = ["--teacher_type", "fairseq", "--teacher_path", hubert, "--kd_loss_conf", "layer_map='1:1,3:2'", "--max_epoch", "1"]
    _train(espnet_data, tmp_path / "online", *CHUNKED, *kd)
    cache = tmp_path / "cache"
    for split in ("train", "valid"):  # the layers the layer map reads, float32: targets identical to the teacher's
        run_espnet("kd_core.cache", "build", "--teacher_type", "fairseq", "--teacher_path", hubert, "--layers", "1,3",
                   "--dtype", "float32", "--out", cache, "--wav_scp", f"{espnet_data['root']}/dump/{split}/wav.scp",
                   "--no_progress", cwd=tmp_path)
    proc = _train(espnet_data, tmp_path / "cached", *CHUNKED, *kd, "--teacher_cache_dir", cache,
                  "--teacher_cache_mode", "read", "--teacher_cache_dtype", "float32")
    assert "teacher targets from cache" in proc.stderr
    online, cached = _train_stats(tmp_path / "online"), _train_stats(tmp_path / "cached")
    for key in ("loss_kd", "kd_l1_t1s1", "kd_cos_t3s2", "loss"):  # same seed, same batches, same targets
        assert abs(online[key] - cached[key]) < 1e-5 * max(1.0, abs(online[key])), (key, online[key], cached[key])
    # another layer selection is another cache: in read mode the first batch stops training with one line
    teacher = ["--teacher_type", "fairseq", "--teacher_path", hubert, "--max_epoch", "1"]
    proc = _train(espnet_data, tmp_path / "other", *CHUNKED, *teacher, "--kd_loss_conf", "layer_map='2:2'",
                  "--teacher_cache_dir", cache, "--teacher_cache_mode", "read", "--teacher_cache_dtype", "float32", check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and "not cached" in last and "Traceback" not in proc.stderr, proc.stderr[-1500:]
