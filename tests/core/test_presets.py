"""One source of truth per method's defaults: the core loss's signature. Every preset either leaves an
option to it (ESPnet recipe, fairseq +method=, bench) or lists it with the same value (fairseq criterion/)."""
import inspect
from pathlib import Path

import pytest
import yaml

from kd_core.losses.registry import KD_LOSSES, user_options

ROOT = Path(__file__).resolve().parents[2]
RECIPE_CONF = ROOT / "egs2/kd_synth/asr1/conf"
#: options a preset may set: which layers meet depends on the teacher/student pair, not on the method
PAIR_OPTIONS = {"layer_map"}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("path", sorted(RECIPE_CONF.glob("*.yaml")), ids=lambda p: p.name)
def test_recipe_presets_leave_method_options_to_the_core(path):
    conf = _yaml(path)
    assert conf.get("kd_loss") in (None, *KD_LOSSES)
    assert set(conf.get("kd_loss_conf") or {}) <= PAIR_OPTIONS, f"{path.name} restates a loss default"


@pytest.mark.parametrize("path", sorted((ROOT / "conf/fairseq/method").glob("*.yaml")), ids=lambda p: p.name)
def test_fairseq_method_overrides_leave_method_options_to_the_core(path):
    assert set(_yaml(path).get("criterion") or {}) <= PAIR_OPTIONS | {"kd_weight", "ctc_weight"}  # adapter weights, not loss options


@pytest.mark.parametrize("criterion,loss", [("kd_layerwise", "layerwise"), ("kd_aux_apc", "aux_apc"), ("kd_lfmmi", "lfmmi"),
                                           ("kd_hubert_disc", "hubert_disc")])
def test_fairseq_criterion_yaml_lists_the_core_defaults(criterion, loss):
    listed = _yaml(ROOT / "conf/fairseq/criterion" / f"{criterion}.yaml")
    for name, p in user_options(KD_LOSSES[loss]).items():
        assert name in listed, f"{criterion}.yaml: {name} missing"
        if p.default is not inspect.Parameter.empty and name not in PAIR_OPTIONS:
            assert listed[name] == p.default, f"{criterion}.yaml {name}={listed[name]!r}, core default {p.default!r}"


def test_bench_sets_only_the_pair_and_the_teachers_target_norm():
    from bench.bench_train import kd_conf

    assert set(kd_conf("1:1")) == PAIR_OPTIONS | {"target_norm"}


def test_student_shape_presets_one_definition():
    """The ESPnet and fairseq preset files are exactly what kd_core/students/presets.py writes; each shape stays
    under its fraction of the zoo teacher; the files' keys are options of the adapters they configure."""
    import dataclasses

    from espnet_kd.encoder import KDChunkedEncoder
    from fairseq_kd.models.kd_student import KDStudentConfig
    from kd_core.students.presets import SHAPES, ZOO_TEACHER_PARAMS, describe, preset_files, student_preset

    for path, text in preset_files(ROOT).items():
        assert path.read_text() == text, f"{path}: regenerate with python -m kd_core.students --write"
        conf = yaml.safe_load(text)
        if "model" in conf:
            assert set(conf["model"]) <= {f.name for f in dataclasses.fields(KDStudentConfig)}
        else:
            assert set(conf["encoder_conf"]) <= set(inspect.signature(KDChunkedEncoder).parameters)
    deep_wide = {}
    for name, (fraction, d, layers, *squeeze) in SHAPES.items():
        info = describe(name)
        assert info["params"] <= ZOO_TEACHER_PARAMS / fraction, name
        assert info["params"] >= 0.8 * ZOO_TEACHER_PARAMS / fraction, name  # near the fraction, not far below it
        deep_wide.setdefault(fraction, {})[name.split("_")[1]] = (d, layers)
        assert student_preset(name).encoder.squeeze == (squeeze[0] if squeeze else 1)
    assert deep_wide[12]["sew"] == deep_wide[12]["deep"]  # the squeezed preset is the deep shape, squeezed
    for fraction, shapes in deep_wide.items():  # per size: a deeper-and-thinner and a shallower-and-wider shape
        assert shapes["deep"][0] < shapes["wide"][0] and shapes["deep"][1] > shapes["wide"][1]
