"""The fairseq plugin against the real fairseq: registrations, config parity with the core, model contract."""
import ast
import dataclasses
import inspect
import subprocess
import sys

import pytest
import torch
import yaml
from fairseq_helpers import ROOT, USER_DIR, hydra_train

pytest.importorskip("fairseq")


def _default(f: dataclasses.Field):
    d = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return d.value if hasattr(d, "value") and not isinstance(d, (int, float, str, bool)) else d


def test_model_config_mirrors_core_signatures():
    from kd_core.students.encoder import ChunkedEncoder
    from kd_core.students.frontends import FbankConv2d, WaveformCNN
    from kd_core.students.model import StreamingStudent

    from fairseq_kd.models.kd_student import ENCODER_FIELDS, FBANK_FIELDS, KDStudentConfig, parse_conv_layers

    fields = {f.name: _default(f) for f in dataclasses.fields(KDStudentConfig)}
    enc = {k: p.default for k, p in inspect.signature(ChunkedEncoder).parameters.items() if k != "input_dim"}
    assert list(ENCODER_FIELDS) == list(enc) and all(fields[k] == v for k, v in enc.items())
    fbank = {k: p.default for k, p in inspect.signature(FbankConv2d).parameters.items() if k != "sample_rate"}
    assert list(FBANK_FIELDS) == list(fbank) and all(fields[k] == v for k, v in fbank.items())
    cnn_default = inspect.signature(WaveformCNN).parameters["conv_layers"].default
    assert parse_conv_layers(fields["conv_feature_layers"]) == [tuple(c) for c in cnn_default]
    assert fields["frontend"] == inspect.signature(StreamingStudent).parameters["frontend"].default


@pytest.mark.parametrize("name", ["kd_layerwise", "kd_aux_apc", "kd_lfmmi", "kd_hubert_disc"])
def test_criterion_configs_mirror_core_losses_and_yaml(name):
    from fairseq.criterions import CRITERION_REGISTRY

    import fairseq_kd  # noqa: F401
    from kd_core.losses.registry import user_options

    crit = CRITERION_REGISTRY[name]
    fields = {f.name: _default(f) for f in dataclasses.fields(crit.config_class)}
    core = user_options(crit.core_loss())
    assert set(fields) - crit.adapter_fields == set(core)  # no option missing, none invented
    for k, p in core.items():  # a core default is the adapter's default (required core args may get one)
        assert p.default is inspect.Parameter.empty or fields[k] == p.default, k
    listed = yaml.safe_load((ROOT / "conf" / "fairseq" / "criterion" / f"{name}.yaml").read_text())
    assert listed.pop("_name") == name and listed == {k: v for k, v in fields.items() if k != "_name"}


def test_model_yaml_lists_every_option_with_its_default():
    from fairseq_kd.models.kd_student import KDStudentConfig

    fields = {f.name: _default(f) for f in dataclasses.fields(KDStudentConfig) if f.name != "_name"}
    listed = yaml.safe_load((ROOT / "conf" / "fairseq" / "model" / "kd_streaming_student.yaml").read_text())
    assert listed.pop("_name") == "kd_streaming_student" and listed == fields


def test_user_dir_import_registers_names_even_if_already_imported():
    """fairseq auto-imports a user dir's tasks/models only on first import; ours registers itself."""
    code = (
        "import fairseq_kd\n"  # already imported (e.g. by a decode script) before fairseq sees the user dir
        "from argparse import Namespace\nfrom fairseq import utils\n"
        f"utils.import_user_module(Namespace(user_dir={str(USER_DIR)!r}))\n"
        "from fairseq.criterions import CRITERION_REGISTRY\nfrom fairseq.models import MODEL_REGISTRY\n"
        "from fairseq.tasks import TASK_REGISTRY\n"
        "print(sorted(k for k in [*CRITERION_REGISTRY, *MODEL_REGISTRY, *TASK_REGISTRY] if k.startswith('kd_')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert ast.literal_eval(out.strip().splitlines()[-1]) == ["kd_audio", "kd_aux_apc", "kd_hubert_ctc", "kd_hubert_disc", "kd_layerwise", "kd_lfmmi",
                                                             "kd_streaming_student"]


def _task_and_model(data_dir, **model_conf):
    from fairseq import models, tasks
    from omegaconf import OmegaConf

    import fairseq_kd  # noqa: F401

    task = tasks.setup_task(OmegaConf.create({"_name": "kd_audio", "data": str(data_dir), "tpu": False, "seed": 1}))
    conf = {"_name": "kd_streaming_student", "d_model": 32, "num_layers": 2, "ffn_dim": 64, "n_mels": 40, "channels": 8,
            "chunk_size": 3, "dropout": 0.0, **model_conf}
    model = task.build_model(OmegaConf.create(conf), from_checkpoint=True)
    assert isinstance(model, models.BaseFairseqModel)
    return task, model


def test_model_equals_core_student_and_trains_with_stock_ctc_criterion(fairseq_data):
    from fairseq import criterions
    from omegaconf import OmegaConf

    from kd_core.students import streaming_student

    task, model = _task_and_model(fairseq_data["letters"])
    task.load_dataset("valid")
    ds = task.dataset("valid")
    sample = ds.collater([ds[i] for i in range(len(ds))])
    net_in = sample["net_input"]
    assert net_in["padding_mask"].any()  # a padded batch
    out = model(**net_in)
    core = streaming_student(frontend="fbank", frontend_conf=dict(n_mels=40, channels=8), vocab_size=len(task.target_dictionary),
                             d_model=32, num_layers=2, ffn_dim=64, chunk_size=3, dropout=0.0).eval()
    core.load_state_dict(model.student.state_dict())
    model.eval()
    out = model(**net_in)
    lengths = (~net_in["padding_mask"]).sum(-1)
    ref = core(net_in["source"], lengths)
    torch.testing.assert_close(out["encoder_out"].transpose(0, 1), ref.logits, rtol=0, atol=0)  # same computation
    assert torch.equal((~out["padding_mask"]).sum(-1), ref.lengths)  # frame padding mask from the core lengths
    # fairseq's own CTC criterion reads our model through its contract (T x B x V, padding_mask)
    ctc = criterions.build_criterion(OmegaConf.create({"_name": "ctc", "sentence_avg": True, "zero_infinity": True}), task)
    model.train()
    loss, size, log = ctc(model, sample)
    loss.backward()
    assert torch.isfinite(loss) and size == len(ds)
    assert all(p.grad is not None for p in model.student.ctc.parameters())


@pytest.mark.parametrize("case, needle", [
    ("missing_teacher", "file not found"),
    ("layer_out_of_range", "student layer 7 out of range"),
    ("missing_audio", "nope.wav not found"),
    ("wrong_rate", "8000 Hz but task.sample_rate=16000"),
    ("kd_without_teacher", "needs a teacher"),
    ("too_long", "more than task.max_sample_size=8000, and kd_audio never crops"),
])
def test_bad_input_fails_before_training_with_one_line(fairseq_data, tiny_teachers, tmp_path, case, needle):
    import soundfile as sf

    data = fairseq_data["letters"]
    teacher = tiny_teachers["fairseq_hubert"]
    extra = []
    if case in ("missing_audio", "wrong_rate"):  # a copy of the manifests with one bad line
        bad = tmp_path / "data"
        bad.mkdir()
        for f in data.iterdir():
            (bad / f.name).write_bytes(f.read_bytes())
        lines = (bad / "train.tsv").read_text().splitlines()
        if case == "missing_audio":
            lines[2] = "train/nope.wav\t16000"
        else:
            sf.write(tmp_path / "8k.wav", torch.zeros(8000).numpy(), 8000)
            lines[2] = f"{tmp_path / '8k.wav'}\t16000"
        (bad / "train.tsv").write_text("\n".join(lines) + "\n")
        data = bad
    if case == "missing_teacher":
        teacher = "/nonexistent/hubert.pt"
    if case == "layer_out_of_range":
        extra = ["criterion.layer_map='1:7'"]
    if case == "kd_without_teacher":
        teacher = "null"
    if case == "too_long":  # every synthetic utterance is longer than half a second
        extra = ["++task.max_sample_size=8000"]
    save = tmp_path / "exp"
    proc = hydra_train(f"task.data={data}", f"model.teacher_path={teacher}", *extra, save_dir=save, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert needle in last and last.startswith("fairseq_kd: error:") and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not list(save.glob("*.pt"))  # nothing trained, nothing written


def test_conv_feature_layers_use_fairseq_syntax_without_eval():
    from kd_core.errors import KDConfigError

    from fairseq_kd.models.kd_student import parse_conv_layers

    assert parse_conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 2 + [(512, 2, 2)]") == [(512, 10, 5), (512, 3, 2), (512, 3, 2), (512, 2, 2)]
    for bad in ("__import__('os').getcwd()", "[(1, 2)]", "[(1, 2, 3)] - [(1, 2, 3)]", "[]"):
        with pytest.raises(KDConfigError, match="conv_feature_layers"):
            parse_conv_layers(bad)
