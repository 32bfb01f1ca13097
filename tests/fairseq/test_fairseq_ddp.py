"""fairseq's own distributed engine on 2 CPU processes (torchrun + gloo, ``+ddp=torchrun``): layer KD and LF-MMI give
the losses and the student of one process with the same global batch (``optimization.update_freq=[2]``). The layer-KD
ranks also fill one teacher-target cache (fill mode, float32): each rank writes its own uniquely named shards of the
utterances it saw (ranks see disjoint batches) and readers list ``shards/``, so no utterance is stored twice and the
targets are the online teacher's (the 1-process run has no cache: same losses)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fairseq_helpers import ROOT, USER_DIR, hydra_train

pytestmark = pytest.mark.slow


def _torchrun(*overrides, save_dir, cwd, port):
    exe = Path(sys.executable).parent
    cmd = [str(exe / "torchrun"), "--nproc_per_node", "2", "--master_port", str(port), str(exe / "fairseq-hydra-train"),
           "--config-dir", str(ROOT / "conf" / "fairseq"), "--config-name", "kd_streaming", f"common.user_dir={USER_DIR}",
           f"checkpoint.save_dir={save_dir}", "+size=debug", "+ddp=torchrun", *map(str, overrides)]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore",
                                                                               "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    return proc


def _losses(stdout):
    """Per-update training losses of fairseq's json log (rank 0 logs the all-reduced values)."""
    rows = [json.loads(line.split(" - ", 1)[1]) for line in stdout.splitlines() if "[train_inner]" in line]
    return {int(r["num_updates"]): {k: float(v) for k, v in r.items() if k in ("loss", "kd", "ctc", "lfmmi_mse", "kd_l1")}
            for r in rows}


def _student(path):
    from kd_core.teachers.fairseq_teacher import read_fairseq_checkpoint

    return {k: v.float() for k, v in read_fairseq_checkpoint(str(path))["model"].items()}


@pytest.mark.parametrize("method", ["layerwise", "lfmmi"])
def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(fairseq_data, tiny_teachers, tmp_path, method):
    if method == "lfmmi":
        args = ["+method=lfmmi", f"task.data={fairseq_data['ctc']}", f"model.teacher_path={tiny_teachers['fairseq_w2v2_ctc']}",
                f"criterion.den_graph_dir={tmp_path / 'den'}"]
    else:
        args = [f"task.data={fairseq_data['letters']}", f"model.teacher_path={tiny_teachers['fairseq_hubert']}"]
    args += ["optimization.max_update=4", "optimization.max_epoch=0", "dataset.disable_validation=true",
             "dataset.max_tokens=60000", "common.log_format=json", "common.log_interval=1", "optimization.lr=[1e-4]"]
    cache = tmp_path / "cache"
    fill = [] if method == "lfmmi" else [f"model.teacher_cache_dir={cache}", "model.teacher_cache_dtype=float32"]
    one = hydra_train(*args, "optimization.update_freq=[2]", "checkpoint.save_interval_updates=1", save_dir=tmp_path / "one",
                      cwd=tmp_path)
    two = _torchrun(*args, *fill, save_dir=tmp_path / "two", cwd=tmp_path, port=29600 + (method == "lfmmi"))
    assert "distributed init (rank 1)" in two.stdout + two.stderr  # really two processes
    l1, l2 = _losses(one.stdout), _losses(two.stdout)
    assert sorted(l1) == sorted(l2) == [1, 2, 3, 4]
    for step in l1:
        for key, v in l1[step].items():
            assert abs(l2[step][key] - v) <= 1e-3 * max(1.0, abs(v)), (step, key, v, l2[step][key])  # logs round to 4 digits
    s1, s2 = _student(tmp_path / "one" / "checkpoint_last.pt"), _student(tmp_path / "two" / "checkpoint_last.pt")
    assert s1.keys() == s2.keys() and not any(k.startswith("_teacher") or "teacher." in k for k in s1)
    # Adam normalises each weight's step, so a weight whose gradient is float noise can step +-lr either way: compare
    # whole-model distances instead. Updates 2-4 moved the student by |s1 - s1_after_1|; the two runs may differ by a
    # small fraction of that (a wrong global batch changes every update's direction: a fraction near 1)
    first = _student(next((tmp_path / "one").glob("checkpoint_*_1.pt")))
    norm = lambda d: float(torch.sqrt(sum((v.double() ** 2).sum() for v in d.values())))  # noqa: E731
    travelled = norm({k: s1[k] - first[k] for k in s1})
    apart = norm({k: s1[k] - s2[k] for k in s1})
    assert travelled > 0 and apart < 0.05 * travelled, (apart, travelled)
    if fill:
        keys = [k for idx in cache.rglob("index.json") for k in json.loads(idx.read_text())["keys"]]
        assert len(keys) >= 8 and len(keys) == len(set(keys))  # 4 updates x 2 ranks x >= 1 utterance, none twice
        assert not list(cache.rglob(".tmp-*"))  # no half-written shard left behind

