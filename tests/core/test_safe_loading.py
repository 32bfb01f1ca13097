"""Checkpoints from outside never run code: a teacher file carrying an arbitrary pickled object is refused with one
line (fairseq loader: torch's weights_only with fairseq's own globals allowed; ESPnet packs: their model file must
be a plain state dict), and the object's code is never executed. Full unpickling is an explicit opt-in."""
import os
import pathlib
import shutil
import zipfile

import pytest
import torch

from kd_core.errors import KDConfigError
from kd_core.teachers import load_teacher


class Payload:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_fairseq_checkpoint_with_a_pickled_object_is_refused(tiny_teachers, tmp_path):
    marker = tmp_path / "code_ran"
    state = torch.load(tiny_teachers["fairseq_hubert"], map_location="cpu", weights_only=False)
    state["extra_state"]["payload"] = Payload(marker)
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(KDConfigError) as err:
        load_teacher("fairseq", str(tmp_path / "evil.pt"))
    assert "\n" not in str(err.value) and "outside the allow-list (" in str(err.value) and "pathlib.Path" in str(err.value)
    assert not marker.exists()


def test_espnet_pack_with_a_pickled_model_file_is_refused_unless_trusted(tiny_teachers, tmp_path):
    marker = tmp_path / "code_ran"
    src = tiny_teachers["espnet"]
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith(".pth"):
                weights = torch.load(zin.open(item), map_location="cpu", weights_only=True)
                weights["payload"] = Payload(marker)
                path = tmp_path / "model.pth"
                torch.save(weights, path)
                data = path.read_bytes()
            zout.writestr(item, data)
    cache = tmp_path / "unpack"
    with pytest.raises(KDConfigError) as err:
        load_teacher("espnet", str(evil), cachedir=str(cache))
    msg = str(err.value)
    assert "\n" not in msg and "not a plain state dict" in msg and "trust_pickle=true" in msg
    assert not marker.exists()
    # the genuine pack loads as before, and the opt-in does what it says (the payload runs: ESPnet unpickles in full)
    assert load_teacher("espnet", str(src), cachedir=str(cache)).num_layers > 0
    shutil.rmtree(cache)
    load_teacher("espnet", str(evil), cachedir=str(cache), trust_pickle=True)
    assert marker.exists()
    os.remove(marker)
