"""Deployment: the Kaldi fbank front-end equals torchaudio's Kaldi fbank and streams exactly; the exported WeNet-style
ONNX model under onnxruntime equals the PyTorch chunk-by-chunk decode; sherpa-onnx's own OnlineRecognizer gives the
PyTorch streaming transcripts; bad students are refused with one line."""
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from float_noise import assert_float_noise_close

from kd_core.deploy import runtime
from kd_core.deploy.wenet_onnx import DeployableStudent, export_wenet_ctc
from kd_core.errors import KDConfigError
from kd_core.students.model import student_tiny

TOKENS = ["<blank>", "|"] + list("abcdefghijklmn")


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Three synthetic utterances (espeak-ng + sox) as ``(1, S)`` float tensors in [-1, 1]."""
    from tools.make_corpus import make_synthetic_corpus

    root = tmp_path_factory.mktemp("deploy_corpus")
    make_synthetic_corpus(root, seed=7, num_train=3, num_valid=1, num_test=1, jobs=1)
    wavs = sorted(root.rglob("*.wav"))[:3]
    assert len(wavs) == 3
    return [torch.from_numpy(sf.read(w, dtype="float32")[0])[None] for w in wavs]


def _student(block_type="conformer", chunk=4, left=2, seed=0, head_gain=1.0, **kw):
    torch.manual_seed(seed)
    model = student_tiny(frontend="kaldi_fbank", frontend_conf=dict(n_mels=80, channels=8), block_type=block_type,
                         chunk_size=chunk, num_left_chunks=left, vocab_size=len(TOKENS), **kw).eval()
    model.frontend.set_global_stats(torch.full((80,), 8.0), torch.full((80,), 4.0))  # fbank of speech is ~0..20
    model.ctc.weight.data *= head_gain
    return DeployableStudent(model.frontend, model.encoder, model.ctc, TOKENS, word_boundary="|"), model


def test_kaldi_fbank_equals_torchaudio_kaldi_and_is_padding_invariant(speech):
    import torchaudio.compliance.kaldi as kaldi

    _, model = _student()
    fe = model.frontend
    for wav in speech:
        ref = kaldi.fbank(wav * 32768, num_mel_bins=80, snip_edges=False, dither=0.0, low_freq=20, high_freq=-400)
        ours = runtime.student_fbank(DeployableStudent(fe, model.encoder, model.ctc, TOKENS), wav)
        assert ours.size(0) == ref.size(0) - 1  # every frame but the last (its window runs past the end: mirrored)
        # compare Mel energies per frame at the frame's own scale (a log bin of tiny energy magnifies rounding)
        peak = ref[: ours.size(0)].max(dim=1, keepdim=True).values
        assert_float_noise_close((ours - peak).exp(), (ref[: ours.size(0)] - peak).exp(), width=512, depth=4,
                                 what="Kaldi fbank vs torchaudio, energy / frame peak")
    # batched with padding: every utterance's frames equal its own
    lengths = torch.tensor([w.size(1) for w in speech])
    batch = torch.nn.utils.rnn.pad_sequence([w[0] for w in speech], batch_first=True)
    with torch.no_grad():
        out, out_len = fe(batch, lengths)
        for b, wav in enumerate(speech):
            alone, n = fe(wav, lengths[b : b + 1])
            assert int(out_len[b]) == int(n[0]) == alone.size(1)
            assert_float_noise_close(out[b, : int(n[0])], alone[0], width=512, depth=5, what=f"utterance {b} in a batch")


@pytest.mark.parametrize("piece", [100, 1111, 4000])
def test_kaldi_student_streams_exactly(speech, piece):
    _, model = _student()
    wav = speech[0]
    with torch.no_grad():
        full = model(wav, torch.tensor([wav.size(1)]))
    streamed = model.stream(wav.split(piece, dim=1))
    assert streamed.logits.shape == full.logits.shape
    assert_float_noise_close(streamed.logits, full.logits, width=512, depth=12, what=f"{piece}-sample pieces")


@pytest.mark.parametrize("block_type,left", [("conformer", 2), ("transformer", 1)])
def test_onnxruntime_chunk_by_chunk_equals_pytorch(speech, tmp_path, block_type, left):
    student, _ = _student(block_type, left=left)
    paths = export_wenet_ctc(student, tmp_path / "onnx", int8=True)
    ort = runtime.OrtStreamer(str(paths["model"]))
    assert (ort.chunk, ort.left) == (4, left)
    for wav in speech:
        got = ort.run(runtime.student_fbank(student, wav).numpy())
        ref = runtime.torch_stream_logprobs(student, wav, left).numpy()
        assert got.shape[0] >= 4 * 8 and got.shape[0] % 4 == 0 and ref.shape[0] - got.shape[0] < 4
        np.testing.assert_allclose(got, ref[: got.shape[0]], rtol=0, atol=1e-4)  # the contract: 1e-4 on log-probs
    # int8 runs the same interface and stays close to fp32 (quantisation error, not a broken graph)
    got8 = runtime.OrtStreamer(str(paths["int8"])).run(runtime.student_fbank(student, speech[0]).numpy())
    ref0 = runtime.torch_stream_logprobs(student, speech[0], left).numpy()[: got8.shape[0]]
    # measured against the log-probs' own spread over the vocabulary: int8 rounding differs between CPUs (VNNI or not;
    # the worst single value was 0.41-0.51 on two machines), a wrong graph errs by about the whole spread
    err, spread = np.abs(got8 - ref0), np.abs(ref0 - ref0.mean(-1, keepdims=True)).mean()
    assert got8.shape == ref0.shape and err.max() > 1e-5 and err.mean() < 0.3 * spread


def test_sherpa_onnx_transcripts_equal_pytorch_streaming(speech, tmp_path):
    # a sharp CTC head turns the random student into a deterministic string generator: any misplaced chunk,
    # cache or feature frame changes the strings
    student, _ = _student(head_gain=30.0)
    export_wenet_ctc(student, tmp_path / "onnx")
    recognizer = runtime.sherpa_recognizer(str(tmp_path / "onnx"))
    refs, hyps = [], []
    for wav in speech:
        refs.append(runtime.reference_transcript(student, wav, left_chunks=2))
        hyps.append(runtime.sherpa_transcribe(recognizer, wav[0].numpy()))
    assert all(len(r) > 10 for r in refs) and len(set(refs)) == len(refs)  # not vacuous
    assert hyps == refs


def test_cli_exports_and_refuses_bad_students(tmp_path):
    bad = [
        (dict(chunk=0), "chunk_size=0: a full-context student cannot stream"),
        (dict(right_context=2), "right_context=2: the runtime's model type has no encoder look-ahead"),
        (dict(left=-1), "pass --left-chunks N"),
        (dict(squeeze=2), "squeeze=2: the export does not build SEW squeezing into the graph yet"),
    ]
    for kw, message in bad:
        student, _ = _student(**kw)
        with pytest.raises(KDConfigError, match=message):
            export_wenet_ctc(student, tmp_path / "bad")
    student, _ = _student(left=-1)
    assert export_wenet_ctc(student, tmp_path / "ok", left_chunks=3)["model"].is_file()
    assert runtime.read_metadata(str(tmp_path / "ok" / "model-streaming.onnx"))["left_chunks"] == "3"
    torch.manual_seed(0)
    fbank = student_tiny(chunk_size=4, num_left_chunks=2, vocab_size=len(TOKENS)).eval()
    with pytest.raises(KDConfigError, match="front-end FbankConv2d: the runtime computes Kaldi fbank itself"):
        export_wenet_ctc(DeployableStudent(fbank.frontend, fbank.encoder, fbank.ctc, TOKENS), tmp_path / "bad")
    assert not (tmp_path / "bad" / "model-streaming.onnx").exists()
    unknown = tmp_path / "model.bin"
    unknown.write_bytes(b"not a checkpoint")
    proc = subprocess.run([sys.executable, "-m", "kd_core.export_onnx", "--checkpoint", str(unknown), "--out", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0
    assert "unknown checkpoint kind" in proc.stderr


def test_readme_deploy_snippet_runs_and_prints_the_streaming_transcript(speech, tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = re.search(r"## Deploy: sherpa-onnx.*?```python\n(.*?)```", readme, re.S).group(1)
    student, _ = _student(left=8, head_gain=30.0)  # the snippet's chunk_size=4, num_left_chunks=8, feature_dim=80
    export_wenet_ctc(student, tmp_path / "deploy")
    sf.write(tmp_path / "x.wav", speech[1][0].numpy(), 16000)
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    printed = " ".join(capsys.readouterr().out.split())
    assert printed == runtime.reference_transcript(student, speech[1], left_chunks=8) and len(printed) > 10


def test_kaldi_front_end_latency_counts_real_samples_only():
    """Frame t reads samples [640 t - 120, 640 t + 1240): 600 samples (37.5 ms) beyond its own 40 ms."""
    _, model = _student()
    assert model.frame_shift_ms == 40.0 and model.frontend_lookahead_ms == 37.5
    _, lengths = model.frontend(torch.randn(2, 1240), torch.tensor([1240, 1239]))
    assert lengths.tolist() == [1, 0]  # the first frame is complete at exactly 1240 samples
