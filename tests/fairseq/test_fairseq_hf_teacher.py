"""fairseq: a Hugging Face teacher (`model.teacher_type=huggingface`) distils like the fairseq checkpoint
it was converted from (same KD loss in fairseq's own log)."""
import re

import pytest
from fairseq_helpers import hydra_train

pytestmark = pytest.mark.slow


def test_hf_teacher_gives_the_fairseq_teachers_losses(fairseq_data, tiny_teachers, tmp_path):
    from kd_core.teachers.hf_convert import convert_fairseq_to_hf

    hf = convert_fairseq_to_hf(str(tiny_teachers["fairseq_hubert"]), str(tmp_path / "hf"))
    losses = {}
    for kind, path in (("fairseq", tiny_teachers["fairseq_hubert"]), ("huggingface", hf)):
        proc = hydra_train(f"task.data={fairseq_data['letters']}", f"model.teacher_type={kind}", f"model.teacher_path={path}",
                           "criterion.layer_map='1:1,3:2'", "optimization.max_epoch=1", save_dir=tmp_path / kind, cwd=tmp_path)
        losses[kind] = re.findall(r'kd_l1_t3s2[" =:]+([0-9.]+)', proc.stdout)
    assert losses["fairseq"] and losses["huggingface"] == losses["fairseq"]
