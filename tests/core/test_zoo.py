"""The shipped zoo: every model's bytes match the sha256 on its card, it loads through the real fairseq
loader, and hubert_mini keeps the HuBERT pre-training head (final_proj + codebook) the discriminative loss
reads. A model listed in zoo/README.md but missing fails: nothing here is skipped."""
import hashlib
import re
from pathlib import Path

import pytest
import torch
from float_noise import assert_float_noise_close

from kd_core.teachers import load_teacher

ZOO = Path(__file__).resolve().parents[2] / "zoo"
SHIPPED = {"hubert_mini": "hubert_mini.pt", "hubert_mini_ctc": "hubert_mini_ctc.pt"}


def _card_sha(name: str) -> str:
    m = re.search(r"sha256[^0-9a-f]*([0-9a-f]{64})", (ZOO / name / "CARD.md").read_text())
    assert m, f"zoo/{name}/CARD.md states no sha256"
    return m.group(1)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_bytes_match_the_card(name):
    path = ZOO / name / SHIPPED[name]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == _card_sha(name)


def test_hubert_mini_loads_with_its_codebook():
    teacher = load_teacher("fairseq", str(ZOO / "hubert_mini/hubert_mini.pt"))
    assert type(teacher.w2v).__name__ == "HubertModel" and teacher.num_layers == 8 and teacher.hidden_size == 320
    assert teacher.frame_shift_ms == 20.0 and teacher.vocab_size is None
    cb = teacher.codebook()
    assert cb.codewords.shape == (100 + 4, 128) and cb.proj_weight.shape == (128, 320) and cb.temperature == 0.1
    state = torch.load(ZOO / "hubert_mini/hubert_mini.pt", map_location="cpu", weights_only=False)
    assert state["last_optimizer_state"] is None  # shipped without optimizer state, weights in fp16
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float16}
    out = teacher(torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1, torch.tensor([16000, 12000]))
    assert out.lengths.tolist() == [49, 37] and all(torch.isfinite(h).all() for h in out.hidden)


def test_hubert_mini_in_hugging_face_format_gives_the_same_targets(tmp_path):
    """The one command that writes a zoo model for transformers (kd_core.teachers.hf_convert); both formats
    give the same targets (the README's distillation works from either)."""
    from kd_core.teachers.hf_convert import main as convert

    convert(["--fairseq", str(ZOO / "hubert_mini/hubert_mini.pt"), "--out", str(tmp_path / "hf")])
    fs, hf = load_teacher("fairseq", str(ZOO / "hubert_mini/hubert_mini.pt")), load_teacher("huggingface", str(tmp_path / "hf"))
    wav, lens = torch.randn(2, 24000, generator=torch.Generator().manual_seed(1)) * 0.1, torch.tensor([24000, 17000])
    a, b = fs(wav, lens), hf(wav, lens)
    assert a.lengths.tolist() == b.lengths.tolist()
    for x, y in zip(a.hidden, b.hidden):
        for i, n in enumerate(a.lengths.tolist()):  # FFN 1280 wide; 7 CNN layers + pos conv + 8 x (attention, FFN)
            assert_float_noise_close(y[i, :n], x[i, :n], width=1280, depth=24, what=f"utt {i}")


def test_hubert_mini_ctc_loads_with_its_alphabet_and_shares_hubert_minis_shape():
    """The fine-tuned teacher: fairseq's own ``hubert_ctc`` name, self-contained (pre-training config in
    ``w2v_args``), fp16 without optimizer state; its CTC head covers fairseq's 4 specials + ``dict.ltr.txt``."""
    from tools.zoo_eval import fairseq_letter_symbols

    path, folder = ZOO / "hubert_mini_ctc/hubert_mini_ctc.pt", ZOO / "hubert_mini_ctc"
    state = torch.load(path, map_location="cpu", weights_only=False)
    assert state["cfg"]["model"]["_name"] == "hubert_ctc" and state["cfg"]["model"]["w2v_args"] is not None
    assert state["last_optimizer_state"] is None
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float16}
    teacher = load_teacher("fairseq", str(path), data_dir=str(folder))
    base = load_teacher("fairseq", str(ZOO / "hubert_mini/hubert_mini.pt"))
    assert (teacher.num_layers, teacher.hidden_size, teacher.frame_shift_ms) == (base.num_layers, base.hidden_size, 20.0)
    assert teacher.vocab_size == len(fairseq_letter_symbols(folder / "dict.ltr.txt"))
    out = teacher(torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1, torch.tensor([16000, 12000]))
    assert out.logits.shape == (2, 49, teacher.vocab_size) and torch.isfinite(out.logits).all()
