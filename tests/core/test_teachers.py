"""Teachers through the real loaders: parity with the toolkits, exact targets, frozen, errors."""
import argparse
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from float_noise import TINY_TEACHERS, assert_float_noise_close, float_noise_atol

from kd_core.errors import KDConfigError
from kd_core.teachers import load_teacher

WAV = torch.randn(3, 16000, generator=torch.Generator().manual_seed(0))
LENS = torch.tensor([16000, 11000, 6500])
FAIRSEQ = ["fairseq_hubert", "fairseq_w2v2", "fairseq_w2v2_ctc"]
CASES = [("fairseq", n) for n in FAIRSEQ] + [("torchaudio", n) for n in FAIRSEQ] + [("espnet", "espnet")]
CNN = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2  # tiny fairseq CNN (kernel, stride), 320 samples = 20 ms


def conv_frames(n):
    for k, s in CNN:
        n = (n - k) // s + 1
    return n


def close(a, b, what=""):
    """Equal up to the float rounding of a tiny teacher's depth (float_noise.py), e.g. batched vs alone."""
    assert_float_noise_close(a, b, what=what, **TINY_TEACHERS)


def fairseq_normalize(wav, lengths):
    """What fairseq's raw_audio_dataset.py postprocess does per file with normalize=True, then zero-pad."""
    return torch.nn.utils.rnn.pad_sequence([F.layer_norm(w[:n], (int(n),)) for w, n in zip(wav, lengths)], batch_first=True)


@pytest.fixture(scope="module")
def teacher(tiny_teachers, tmp_path_factory):
    """``teacher(kind, name)``: loaded once per module through ``load_teacher``."""
    cache, zoo = {}, str(tmp_path_factory.mktemp("zoo"))

    def get(kind, name):
        if (kind, name) not in cache:
            kw = {"cachedir": zoo} if kind == "espnet" else {}
            cache[kind, name] = load_teacher(kind, str(tiny_teachers[name]), **kw)
        return cache[kind, name]

    return get


def fairseq_reference(path):
    """The checkpoint loaded by fairseq's own ``load_model_ensemble_and_task``: (full model, w2v model, cfg)."""
    from fairseq import checkpoint_utils

    models, cfg, _ = checkpoint_utils.load_model_ensemble_and_task([str(path)])
    ref = models[0].eval()
    return ref, (ref.w2v_encoder.w2v_model if hasattr(ref, "w2v_encoder") else ref), cfg


@pytest.mark.parametrize("kind,name", CASES)
def test_shapes_lengths_logits(kind, name, teacher):
    t = teacher(kind, name)
    out = t(WAV, LENS)
    assert len(out.hidden) == t.num_layers + 1 and t.sample_rate == 16000
    assert all(h.shape == (3, int(out.lengths.max()), t.hidden_size) for h in out.hidden)
    if kind == "espnet":  # centred STFT (n_fft 400, hop 160): L // 160 + 1 frames; Conv2dSubsampling: ((n-1)//2-1)//2
        frames = LENS // 160 + 1
        assert out.lengths.tolist() == (((frames - 1) // 2 - 1) // 2).tolist() and t.frame_shift_ms == 40
    else:
        assert out.lengths.tolist() == conv_frames(LENS).tolist() and t.frame_shift_ms == 20
        if kind == "torchaudio":  # the toolkit's own formula
            assert out.lengths.tolist() == t.model.feature_extractor(WAV, LENS)[1].tolist()
        elif name != "fairseq_hubert":
            assert out.lengths.tolist() == t.w2v._get_feat_extract_output_lengths(LENS).tolist()
    has_logits = name in ("fairseq_w2v2_ctc", "espnet")
    assert (out.logits is not None) == has_logits and (t.vocab_size is not None) == has_logits
    if has_logits:
        assert out.logits.shape == (3, int(out.lengths.max()), t.vocab_size)


@pytest.mark.parametrize("name", FAIRSEQ)
def test_fairseq_parity_with_fairseq_own_loader(name, teacher, tiny_teachers):
    """Every layer equals fairseq's own extract_features on the model from load_model_ensemble_and_task."""
    t = teacher("fairseq", name)
    ref, w2v, cfg = fairseq_reference(tiny_teachers[name])
    assert t.normalize == bool(cfg.task.normalize)
    wav = fairseq_normalize(WAV[:1], LENS[:1]) if cfg.task.normalize else WAV[:1]
    ours = t(WAV[:1], LENS[:1])
    with torch.no_grad():
        if name == "fairseq_hubert":  # HubertModel.extract_features drops layer_results: ask per layer
            expect = [w2v.extract_features(wav, mask=False, output_layer=i)[0] for i in range(1, t.num_layers + 1)]
        else:  # layer_results[i] = (x, attn, ffn-before-residual); x is the layer output, T x B x C
            res = w2v.extract_features(wav, None, mask=False, layer=None)
            expect = [lr[0].transpose(0, 1) for lr in res["layer_results"]]
        for i, e in enumerate(expect, 1):
            close(ours.hidden[i], e, f"layer {i}")
        # hidden[0]: the input of layers[0] = projected CNN features + positional conv (+ LN if post-LN)
        x = w2v.post_extract_proj(w2v.layer_norm(w2v.feature_extractor(wav).transpose(1, 2)))
        x = x + w2v.encoder.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        x = x if w2v.encoder.layer_norm_first else w2v.encoder.layer_norm(x)
        close(ours.hidden[0], x, "layer 0")
        close(w2v.encoder.layers[0](ours.hidden[0].transpose(0, 1))[0].transpose(0, 1), ours.hidden[1], "layers[0](hidden[0])")
        if name == "fairseq_w2v2_ctc":
            close(ours.logits, ref(source=wav, padding_mask=None)["encoder_out"].transpose(0, 1), "logits")
        from kd_core.teachers.masked_norm import has_group_norm

        if not has_group_norm(t.conv_blocks()):  # also batched: fairseq's own padded call (which a group-norm CNN
            # would leak padding into; test_targets_do_not_depend_on_batch covers those), valid frames
            wav_b = fairseq_normalize(WAV, LENS) if cfg.task.normalize else WAV
            pad = torch.arange(WAV.size(1))[None] >= LENS[:, None]
            res = w2v.extract_features(wav_b, pad, mask=False, layer=None)
            batched = t(WAV, LENS)
            for i, lr in enumerate(res["layer_results"], 1):
                for j, n in enumerate(batched.lengths.tolist()):
                    close(batched.hidden[i][j, :n], lr[0].transpose(0, 1)[j, :n], f"batched layer {i} utt {j}")


@pytest.mark.parametrize("name", FAIRSEQ)
def test_torchaudio_import_matches_fairseq(name, teacher):
    fs, ta = teacher("fairseq", name), teacher("torchaudio", name)
    assert (fs.num_layers, fs.hidden_size, fs.padding_sensitive, fs.normalize) == \
        (ta.num_layers, ta.hidden_size, ta.padding_sensitive, ta.normalize)
    a, b = fs(WAV, LENS), ta(WAV, LENS)
    assert a.lengths.tolist() == b.lengths.tolist()
    for i, (x, y) in enumerate(zip(a.hidden, b.hidden)):
        for j, n in enumerate(a.lengths.tolist()):
            close(y[j, :n], x[j, :n], f"layer {i} utt {j}")
    if a.logits is not None:  # and our logits are torchaudio's own forward
        with torch.no_grad():
            own, _ = ta.model(fairseq_normalize(WAV[:1], LENS[:1]) if ta.normalize else WAV[:1], LENS[:1])
        close(b.logits[:1, : own.size(1)], own, "torchaudio forward")
        for j, n in enumerate(a.lengths.tolist()):
            close(b.logits[j, :n], a.logits[j, :n], f"logits utt {j}")


@pytest.mark.parametrize("kind,name", CASES)
def test_targets_do_not_depend_on_batch(kind, name, teacher):
    t = teacher(kind, name)
    batched = t(WAV, LENS)
    for i in range(3):
        alone = t(WAV[i : i + 1, : LENS[i]], LENS[i : i + 1])
        n = int(alone.lengths[0])
        assert int(batched.lengths[i]) == n and alone.hidden[0].size(1) == n
        for k, (h_b, h_a) in enumerate(zip(batched.hidden, alone.hidden)):
            close(h_b[i, :n], h_a[0], f"layer {k} utt {i}")
        if alone.logits is not None:
            close(batched.logits[i, :n], alone.logits[0], f"logits utt {i}")


def test_group_norm_cnn_batched_with_valid_frame_statistics(teacher, tiny_teachers):
    """Raw fairseq HuBERT (group-norm CNN) batched with a padding mask leaks padding; the teacher runs the same
    batch in one forward (not utterance by utterance) and gives each utterance its targets alone."""
    t = teacher("fairseq", "fairseq_hubert")
    assert not t.padding_sensitive
    _, w2v, _ = fairseq_reference(tiny_teachers["fairseq_hubert"])
    pad = torch.arange(WAV.size(1))[None] >= LENS[:, None]
    with torch.no_grad():
        naive, _ = w2v.extract_features(WAV, padding_mask=pad, mask=False)
        alone, _ = w2v.extract_features(WAV[2:3, : LENS[2]], mask=False)
    n = alone.size(1)
    assert (naive[2, :n] - alone[0]).abs().max() > max(1e-3, 10 * float_noise_atol(alone[0], **TINY_TEACHERS))
    close(t(WAV, LENS).hidden[-1][2, :n], alone[0])


def test_espnet_needs_per_utterance_runs(teacher):
    """ESPnet's conformer conv module and centred STFT see padding when batched."""
    t = teacher("espnet", "espnet")
    with torch.no_grad():
        naive, _ = t.model.encode(WAV, LENS)
        alone, n = t.model.encode(WAV[2:3, : LENS[2]], LENS[2:3])
    assert (naive[2, : int(n)] - alone[0]).abs().max() > max(1e-3, 10 * float_noise_atol(alone[0], **TINY_TEACHERS))
    close(t.model.encoder.after_norm(t(WAV, LENS).hidden[-1][2, : int(n)]), alone[0])


def test_hubert_layer_norm_cnn_batched_uses_conv_lengths(tiny_teachers):
    """HuBERT maps a *sample* padding mask to frames by reshaping (hubert.py forward_padding_mask): for a
    1 s utterance next to a 2 s one that marks 50 frames valid where the CNN gives 49. The teacher passes
    frame-level masks, so a batched layer-norm-CNN HuBERT (not padding-sensitive) stays exact."""
    from fairseq import checkpoint_utils, tasks

    from kd_core.teachers.fairseq_teacher import FairseqTeacher

    cfg = checkpoint_utils.load_checkpoint_to_cpu(str(tiny_teachers["fairseq_hubert"]))["cfg"]
    cfg.model.extractor_mode = "layer_norm"
    torch.manual_seed(0)
    model = tasks.setup_task(cfg.task).build_model(cfg.model).eval()
    t = FairseqTeacher(model)
    assert not t.padding_sensitive
    wav, lens = torch.randn(2, 32000, generator=torch.Generator().manual_seed(1)), torch.tensor([32000, 16000])
    with torch.no_grad():
        _, own_pad = model.extract_features(wav, padding_mask=torch.arange(32000)[None] >= lens[:, None], mask=False)
    assert (~own_pad).sum(1).tolist() == [99, 50] and conv_frames(lens).tolist() == [99, 49]
    batched, alone = t(wav, lens), t(wav[1:, :16000], lens[1:])
    assert batched.lengths.tolist() == [99, 49]
    for k, (h_b, h_a) in enumerate(zip(batched.hidden, alone.hidden)):
        close(h_b[1, :49], h_a[0], f"layer {k}")


@pytest.mark.parametrize("kind,name", CASES)
def test_frozen_eval_deterministic(kind, name, teacher):
    t = teacher(kind, name)
    t.train()
    assert not t.training and not any(m.training for m in t.modules())
    assert not any(p.requires_grad for p in t.parameters())
    a, b = t(WAV, LENS), t(WAV, LENS)
    assert all(h.grad_fn is None for h in a.hidden) and (a.logits is None or a.logits.grad_fn is None)
    for x, y in zip(a.hidden, b.hidden):
        assert torch.equal(x, y)
    if kind == "fairseq":
        assert t.w2v.encoder.layerdrop == 0.0  # the checkpoints were saved with encoder_layerdrop 0.05
    if kind == "torchaudio":
        assert t.model.encoder.transformer.layer_drop == 0.0


def _resave(src, dst, edit):
    """Rewrite one of our own (trusted) tiny checkpoints the way official ones differ."""
    state = torch.load(src, map_location="cpu", weights_only=False)
    edit(state)
    torch.save(state, dst)
    return str(dst)


def test_official_style_fairseq_checkpoints(tiny_teachers, teacher, tmp_path):
    from fairseq import checkpoint_utils
    from fairseq.data.dictionary import Dictionary
    from fairseq.tasks.audio_pretraining import AudioPretrainingConfig

    hubert, ctc = str(tiny_teachers["fairseq_hubert"]), str(tiny_teachers["fairseq_w2v2_ctc"])
    labels = tiny_teachers["fairseq_hubert"].parent / "fairseq_labels"
    ref_h, ref_c = teacher("fairseq", "fairseq_hubert")(WAV[:1], LENS[:1]), teacher("fairseq", "fairseq_w2v2_ctc")(WAV[:1], LENS[:1])

    def same(path, ref, **kw):
        out = load_teacher("fairseq", path, **kw)(WAV[:1], LENS[:1])
        for x, y in zip(out.hidden + [out.logits], ref.hidden + [ref.logits]):
            assert (x is None and y is None) or torch.equal(x, y)

    def pickled_objects(s):  # Namespace, numpy scalars, pickled dictionaries in task_state
        s["extra_state"].update(args=argparse.Namespace(lr=[1e-4]), best_loss=np.float64(1.5))
        s["task_state"] = {"dictionaries": [Dictionary.load(str(labels / "dict.km.txt"))]}

    path = _resave(hubert, tmp_path / "pickles.pt", pickled_objects)
    with pytest.raises(Exception, match="Weights only load failed"):
        checkpoint_utils.load_checkpoint_to_cpu(path)  # fairseq alone, torch's weights_only default
    same(path, ref_h)

    def elsewhere(s):  # trained on another machine: data/label dirs do not exist here
        for c in (s["cfg"]["task"], s["cfg"]["model"], (s["cfg"]["model"].get("w2v_args") or {}).get("task", {})):
            c.update({k: f"/nonexistent/{k}" for k in ("data", "label_dir", "w2v_path") if k in c})

    for src, ref in ((hubert, ref_h), (ctc, ref_c)):
        path = _resave(src, tmp_path / "moved.pt", elsewhere)
        with pytest.raises(FileNotFoundError):
            checkpoint_utils.load_model_ensemble_and_task([path])
        same(path, ref)  # placeholder dictionaries sized from the weights
        same(path, ref, data_dir=str(labels))  # or the real ones

    fields = {f.name for f in dataclasses.fields(AudioPretrainingConfig)} | {"_name"}

    def old_task(s):  # pre-0.10 fine-tuned checkpoints: task audio_pretraining with labels
        s["cfg"]["task"] = {k: v for k, v in s["cfg"]["task"].items() if k in fields} | {"_name": "audio_pretraining"}

    path = _resave(ctc, tmp_path / "old_task.pt", old_task)
    with pytest.raises(TypeError):  # Wav2VecCtc.build_model: len(task.target_dictionary) of None
        checkpoint_utils.load_model_ensemble_and_task([path])
    same(path, ref_c)


def test_bad_input(tmp_path, teacher):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    junk_zip = tmp_path / "junk.zip"
    junk_zip.write_bytes(np.random.default_rng(1).bytes(4096))
    cases = [(("fairseq", str(tmp_path / "missing.pt")), r"teacher_path=\S*missing.pt: file not found"),
             (("fairseq", str(junk)), r"teacher_path=\S*junk.pt: not a readable fairseq checkpoint"),
             (("torchaudio", str(tmp_path / "missing.pt")), r"teacher_path=\S*missing.pt: file not found"),
             (("torchaudio", str(junk)), r"teacher_path=\S*junk.pt: not a readable fairseq checkpoint"),
             (("torchaudio", "resnet50"), "teacher_path='resnet50': not a torchaudio"),
             (("espnet", str(tmp_path / "missing.zip")), r"teacher_path=\S*missing.zip: file not found"),
             (("espnet", str(junk_zip), {"cachedir": str(tmp_path / "zoo")}), r"teacher_path=\S*junk.zip: cannot unpack"),
             (("kaldi", "x"), "teacher_type='kaldi': unknown; choose one of fairseq, torchaudio, espnet")]
    for args, msg in cases:
        kw = args[2] if len(args) > 2 else {}
        with pytest.raises(KDConfigError, match=msg) as e:
            load_teacher(*args[:2], **kw)
        assert "\n" not in str(e.value)
    for kind, name in [("fairseq", "fairseq_w2v2"), ("torchaudio", "fairseq_hubert"), ("espnet", "espnet")]:
        t = teacher(kind, name)
        with pytest.raises(KDConfigError, match="empty audio"):
            t(torch.zeros(2, 1000), torch.tensor([1000, 0]))
        with pytest.raises(KDConfigError, match="too short|shorter than") as e:
            t(torch.randn(1, 200), torch.tensor([200]))
        assert "\n" not in str(e.value)


def test_student_cnn_and_ctc_head_initialised_from_teacher(tiny_teachers):
    """DistillW2V2 stage 1: a wav_cnn student with the teacher's conv layers starts from its CNN and head."""
    from kd_core.errors import KDConfigError
    from kd_core.students import streaming_student
    from kd_core.students.init_from_teacher import init_from_teacher

    teacher = load_teacher("fairseq", str(tiny_teachers["fairseq_w2v2_ctc"]))
    layers = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2  # the tiny teacher's conv_feature_layers
    student = streaming_student(frontend="wav_cnn", frontend_conf={"conv_layers": layers}, vocab_size=teacher.vocab_size,
                                d_model=teacher.hidden_size, num_layers=1, ffn_dim=32)
    copied = init_from_teacher(teacher, student.frontend, student.ctc)
    assert copied == [f"{kind}{i}" for i in range(7) for kind in ("conv", "norm")] + ["ctc"]
    blocks = teacher.conv_blocks()
    assert all(torch.equal(student.frontend.convs[i].weight, blocks[i][0].weight) for i in range(7))
    assert torch.equal(student.ctc.weight, teacher.prediction_layer().weight)
    # HuBERT's first block normalises over time (GroupNorm): its conv is copied, its norm never
    hubert = load_teacher("fairseq", str(tiny_teachers["fairseq_hubert"]))
    fresh = streaming_student(frontend="wav_cnn", frontend_conf={"conv_layers": layers}, d_model=16, num_layers=1, ffn_dim=32)
    assert "norm0" not in init_from_teacher(hubert, fresh.frontend) and "conv0" in init_from_teacher(hubert, fresh.frontend)
    with pytest.raises(KDConfigError, match="no teacher CNN layer"):
        init_from_teacher(teacher, streaming_student(frontend="fbank", d_model=16, num_layers=1, ffn_dim=32).frontend)


def test_masked_group_norm_equals_group_norm_per_utterance():
    """The padding-aware GroupNorm of a padded batch equals torch's GroupNorm on each utterance alone, for
    per-channel (wav2vec2 Base) and grouped statistics, and zeroes every frame beyond a length."""
    from kd_core.teachers.masked_norm import masked_group_norm

    g = torch.Generator().manual_seed(3)
    x, lens = torch.randn(3, 8, 20, generator=g) * 5 + 2, torch.tensor([20, 7, 13])
    for groups in (8, 2):
        norm = torch.nn.GroupNorm(groups, 8)
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5, generator=g)
            norm.bias.uniform_(-1, 1, generator=g)
            got = masked_group_norm(x, lens, norm)
            for i, n in enumerate(lens.tolist()):
                want = norm(x[i:i + 1, :, :n])[0]
                torch.testing.assert_close(got[i, :, :n], want, rtol=0, atol=1e-5 * float(want.abs().max()))
                assert got[i, :, n:].abs().sum() == 0
            assert (norm(x)[1, :, :7] - got[1, :, :7]).abs().max() > 1e-2  # plain GroupNorm of the batch differs


def test_student_teacher_targets_do_not_depend_on_batch():
    """A trained core student as teacher (two-stage KD) runs batched: its targets equal utterance-alone runs."""
    from kd_core.students import student_tiny
    from kd_core.teachers.student_teacher import StudentTeacher

    torch.manual_seed(0)
    t = StudentTeacher(student_tiny(num_layers=3, chunk_size=3, vocab_size=9, dropout=0.1))
    assert not t.training and not t.student.training  # frozen: dropout off
    batched = t(WAV, LENS)
    for i in range(3):
        alone = t(WAV[i : i + 1, : LENS[i]], LENS[i : i + 1])
        n = int(alone.lengths[0])
        assert int(batched.lengths[i]) == n
        for k, (h_b, h_a) in enumerate(zip(batched.hidden + [batched.logits], alone.hidden + [alone.logits])):
            # student_tiny: FFN 128 wide; fbank + 2 conv2d + 3 conformer blocks x (2 FFN, attention, conv) + head
            assert_float_noise_close(h_b[i, :n], h_a[0], width=128, depth=16, what=f"output {k} utt {i}")
