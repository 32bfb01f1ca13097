"""Teacher-target cache with real tiny fairseq teachers: exact targets, invalidation, resumable builds, CLI."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from float_noise import TINY_TEACHERS, float_noise_atol

from kd_core.cache import (CachedTeacher, TeacherTargetCache, build_cache, load_cached_teacher, main, read_wav_list,
                           teacher_fingerprint, utterance_keys)
from kd_core.data import load_audio, pad_batch
from kd_core.distiller import Distiller
from kd_core.errors import KDConfigError
from kd_core.students import student_tiny
from kd_core.teachers import load_teacher

REPO = Path(__file__).resolve().parents[2]


def write_wavs(folder: Path, n: int = 6, sr: int = 16000, seed: int = 0) -> Path:
    """``n`` short 16-bit wavs (0.25-0.75 s: tone + noise) and their ``wav.scp``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        s = int(rng.integers(4000, 12000)) * sr // 16000
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * np.arange(s) / sr) + 0.05 * rng.standard_normal(s)
        sf.write(folder / f"utt{i}.wav", x.astype(np.float32), sr, subtype="PCM_16")
        lines.append(f"utt{i} {folder / f'utt{i}.wav'}\n")
    (folder / "wav.scp").write_text("".join(lines))
    return folder / "wav.scp"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    scp = write_wavs(tmp_path_factory.mktemp("wavs"))
    utts = read_wav_list(wav_scp=str(scp))
    return scp, utts, [load_audio(p) for _, p in utts]


@pytest.fixture(scope="module")
def teachers(tiny_teachers):
    return {n: load_teacher("fairseq", str(tiny_teachers[n])) for n in ("fairseq_hubert", "fairseq_w2v2_ctc")}


def count_utterances(teacher):
    """Utterances the real teacher has run on since the call (a forward hook; the teacher is unchanged)."""
    seen = [0]
    handle = teacher.register_forward_hook(lambda m, args, out: seen.__setitem__(0, seen[0] + args[0].size(0)))
    return seen, handle


def assert_valid_frames(got, ref, layers, exact, rtol=0.0):
    """Valid frames equal (bitwise when ``exact``, else up to ``rtol`` of each value, e.g. float16 rounding,
    plus the float32 noise of the tiny teacher's depth: float_noise.py); padding is zero."""
    n = ref.lengths.tolist()
    assert got.lengths.tolist() == n
    pairs = [(got.hidden[i], ref.hidden[i]) for i in layers] + ([(got.logits, ref.logits)] if ref.logits is not None else [])
    for g, r in pairs:
        for b, t in enumerate(n):
            if exact:
                assert torch.equal(g[b, :t], r[b, :t])
            else:
                torch.testing.assert_close(g[b, :t], r[b, :t], rtol=rtol, atol=float_noise_atol(r[b, :t], **TINY_TEACHERS))
            assert not g[b, t:].any()  # padding is zero


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name", ["fairseq_hubert", "fairseq_w2v2_ctc"])
def test_cached_targets_equal_teacher(name, dtype, teachers, tiny_teachers, corpus, tmp_path):
    """Fill, then read back (same process and a fresh one) in other batch compositions: the teacher's
    targets, exactly in float32 (HuBERT runs per utterance: bitwise; wav2vec2 is batched: 1e-5) and
    as the teacher's output rounded to float16 in float16."""
    teacher, (_, _, wavs) = teachers[name], corpus
    layers, logits = (0, 2, 3), name.endswith("ctc")
    fp = teacher_fingerprint("fairseq", tiny_teachers[name])
    cache = TeacherTargetCache(tmp_path, fp, "3,0,2", dtype, store_logits=logits, shard_size=3)
    cached = CachedTeacher(cache, teacher)
    assert (cached.num_layers, cached.hidden_size, cached.vocab_size, cached.frame_shift_ms, cached.sample_rate) == \
        (teacher.num_layers, teacher.hidden_size, teacher.vocab_size, teacher.frame_shift_ms, teacher.sample_rate)
    wav, lens = pad_batch(wavs[:4])
    assert cache.lookup(wav, lens) is None
    seen, handle = count_utterances(teacher)
    first = cached(wav, lens)  # 4 computed, buffered, written as one shard (>= shard_size)
    assert seen[0] == 4 and len(cache.shard_names()) == 1 and len(cache) == 4
    order = [5, 3, 0, 4, 1]  # other padding, other neighbours, 2 new utterances
    wav2, lens2 = pad_batch([wavs[i] for i in order])
    second = cached(wav2, lens2)
    assert seen[0] == 6 and (cached.hits, cached.misses) == (3, 6) and len(cache.shard_names()) == 1  # 2 buffered
    handle.remove()
    cache.flush()
    for i in range(len(wavs)):  # every utterance, cached or computed, as its own teacher run says
        alone = teacher(wavs[i][None], torch.tensor([wavs[i].numel()]))
        if dtype == "float16":
            alone.hidden = [h.half().float() for h in alone.hidden]
            alone.logits = None if alone.logits is None else alone.logits.half().float()
        fresh = TeacherTargetCache(tmp_path, fp, layers, dtype, logits).lookup(wavs[i][None], torch.tensor([wavs[i].numel()]))
        exact = False  # batched vs alone differs by float noise (the group-norm HuBERT CNN runs batched too)
        assert_valid_frames(fresh, alone, layers, exact, rtol=2 ** -10 if dtype == "float16" else 0.0)  # 2x fp16 half-ulp
        assert fresh.hidden[1] is None and (fresh.logits is not None) == logits
    ref = teacher(wav2, lens2)  # the padded batch: cached == online on valid frames, zeros beyond
    if dtype == "float32":
        assert_valid_frames(second, ref, layers, exact=False)
    else:
        for i in layers:
            err = max((second.hidden[i][b, :t] - ref.hidden[i][b, :t]).abs().max() for b, t in enumerate(ref.lengths.tolist()))
            assert err <= ref.hidden[i].abs().max() * 2 ** -11 + float_noise_atol(ref.hidden[i], **TINY_TEACHERS)
    for b, i in enumerate(order):  # the same utterance: the same targets, fill or read, any batch
        if i < 4:
            t = int(first.lengths[i])
            assert all(torch.equal(first.hidden[k][i, :t], second.hidden[k][b, :t]) for k in layers)


def test_memory_mapped_shards(teachers, tiny_teachers, corpus, tmp_path):
    teacher, (_, _, wavs) = teachers["fairseq_w2v2_ctc"], corpus
    cache = TeacherTargetCache(tmp_path, teacher_fingerprint("fairseq", tiny_teachers["fairseq_w2v2_ctc"]), [1, 3], "float16")
    wav, lens = pad_batch(wavs[:3])
    keys = cache.add(wav, lens, teacher(wav, lens))
    assert cache.shard_names() == [] and cache.flush() is not None
    reopened = TeacherTargetCache.open(cache.path)
    hidden, logits = reopened.entry(keys[1])
    assert isinstance(hidden, np.memmap) and isinstance(logits, np.memmap) and hidden.dtype == np.float16
    assert hidden.shape == (int(teacher(wav[1:2, : lens[1]], lens[1:2]).lengths[0]), 2, teacher.hidden_size)
    shard = cache.path / "shards" / cache.shard_names()[0]
    assert sorted(os.listdir(shard)) == ["hidden.npy", "index.json", "logits.npy"]
    assert isinstance(np.load(shard / "hidden.npy", mmap_mode="r"), np.memmap)
    meta = json.loads((cache.path / "meta.json").read_text())
    assert meta["layers"] == [1, 3] and meta["teacher_info"]["num_layers"] == teacher.num_layers and meta["logits"]


def test_changed_teacher_or_audio_misses(teachers, tiny_teachers, corpus, tmp_path):
    teacher, (_, _, wavs) = teachers["fairseq_hubert"], corpus
    path = tiny_teachers["fairseq_hubert"]
    fp = teacher_fingerprint("fairseq", path)
    cache = TeacherTargetCache(tmp_path / "c", fp, [3], "float32", store_logits=False)
    wav, lens = pad_batch(wavs[:2])
    cache.add(wav, lens, teacher(wav, lens))
    cache.flush()
    assert cache.lookup(wav, lens) is not None

    copy = tmp_path / "elsewhere.pt"  # same bytes elsewhere: same cache
    copy.write_bytes(Path(path).read_bytes())
    assert TeacherTargetCache(tmp_path / "c", teacher_fingerprint("fairseq", copy), [3], "float32", False).path == cache.path
    state = torch.load(path, map_location="cpu", weights_only=False)  # retrained: other weights, other bytes
    [v for v in state["model"].values() if v.is_floating_point()][0].add_(1e-3)
    torch.save(state, tmp_path / "retrained.pt")
    other = TeacherTargetCache(tmp_path / "c", teacher_fingerprint("fairseq", tmp_path / "retrained.pt"), [3], "float32", False)
    assert other.path != cache.path and other.lookup(wav, lens) is None and len(other) == 0
    for kw in ({"layers": [2]}, {"dtype": "float16"}):  # other selection or precision: another cache
        conf = {"layers": [3], "dtype": "float32", **kw}
        assert TeacherTargetCache(tmp_path / "c", fp, conf["layers"], conf["dtype"], False).lookup(wav, lens) is None

    changed = wav.clone()
    changed[1, 100] += 1 / 32768  # one sample, one PCM step
    assert cache.lookup(changed, lens) is None
    assert cache.lookup(changed[:1], lens[:1]) is not None  # the unchanged utterance still hits
    with pytest.raises(KDConfigError, match=r"1 of 2 utterances of this batch are not cached.*kd_core.cache build"):
        CachedTeacher(cache, mode="read")(changed, lens)

    meta = json.loads(cache.meta_path.read_text())
    cache.meta_path.write_text(json.dumps({**meta, "layers": [2, 3]}))
    with pytest.raises(KDConfigError, match=r"meta.json: describes another cache \(layers=\[2, 3\]\)"):
        TeacherTargetCache(tmp_path / "c", fp, [3], "float32", False)


def test_killed_build_is_incomplete_and_resumes(teachers, tiny_teachers, corpus, tmp_path):
    teacher, (scp, utts, wavs) = teachers["fairseq_w2v2_ctc"], corpus
    fp = teacher_fingerprint("fairseq", tiny_teachers["fairseq_w2v2_ctc"])
    args = (tmp_path, teacher, fp, "1,3", utts)
    kw = dict(dtype="float16", store_logits=True, shard_size=2, progress=False)

    def killed_after_first(i, name):
        if i == 1:
            raise KeyboardInterrupt  # stands for a kill between two shards

    with pytest.raises(KeyboardInterrupt):
        build_cache(*args, on_shard=killed_after_first, **kw)
    cache = TeacherTargetCache(tmp_path, fp, [1, 3], "float16", True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = cache.path / "shards" / f".tmp-b-x-000002-{socket.gethostname()}-{dead.pid}-0123abcd"
    leftover.mkdir()  # a half-written shard of a writer killed mid-shard
    (leftover / "hidden.npy").write_bytes(b"\x93NUMPY")
    status = cache.status()
    assert not cache.complete and (status["cached"], status["expected"], status["complete"]) == (4, 6, False)
    assert status["temporary_dirs"] == 1
    assert main(["status", "--out", str(tmp_path)]) == 1
    wav, lens = pad_batch(wavs[4:6])
    with pytest.raises(KDConfigError, match="not cached"):
        CachedTeacher(cache, mode="read")(wav, lens)

    built = {n: os.stat(cache.path / "shards" / n).st_mtime_ns for n in cache.shard_names()}
    seen, handle = count_utterances(teacher)
    done = build_cache(*args, **kw)
    assert seen[0] == 2 and done.complete and len(done) == 6 and not leftover.exists()
    assert all(os.stat(cache.path / "shards" / n).st_mtime_ns == t for n, t in built.items())
    assert build_cache(*args, **kw).complete and seen[0] == 2  # nothing left to compute
    handle.remove()
    assert TeacherTargetCache(tmp_path, fp, [1, 3], "float16", True).complete
    assert main(["status", "--out", str(cache.path)]) == 0

    read = CachedTeacher(TeacherTargetCache(tmp_path, fp, [1, 3], "float16", True), mode="read")  # no teacher at all
    out = read(wav, lens)
    assert read.vocab_size == teacher.vocab_size and out.logits.shape[-1] == teacher.vocab_size
    assert_valid_frames(out, teacher(wav, lens), [1, 3], exact=False, rtol=2 ** -10)

    os.utime(utts[0][1])  # the data changed on disk: the old build no longer covers the list
    grown = utts + [("extra", utts[0][1])]
    fresh = build_cache(tmp_path, teacher, fp, "1,3", grown, **kw)
    assert fresh.complete and fresh.expected == 7 and len(fresh) == 6  # duplicate audio stored once


def test_cached_teacher_in_distiller(teachers, tiny_teachers, corpus, tmp_path):
    """A CachedTeacher (float32) drops into the Distiller: the same loss as the real teacher."""
    teacher, (_, _, wavs) = teachers["fairseq_hubert"], corpus
    cached = load_cached_teacher(tmp_path, "fairseq", str(tiny_teachers["fairseq_hubert"]), "1,3", dtype="float32",
                                 teacher=teacher)
    assert not cached.cache.store_logits and cached.vocab_size is None
    wav, lens = pad_batch(wavs[:3])
    losses = []
    for t in (teacher, cached, cached):
        torch.manual_seed(0)
        dist = Distiller(t, student_tiny(num_layers=2, chunk_size=3), layer_map="1:1,3:2").eval()
        losses.append(dist(wav, lens)[0])
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=0)
    assert losses[2] == losses[1] and (cached.hits, cached.misses) == (3, 3)
    read = load_cached_teacher(tmp_path, "fairseq", str(tiny_teachers["fairseq_hubert"]), "1,3", mode="read", dtype="float32")
    assert read.teacher is None and read.cache.path == cached.cache.path  # read mode loads no model


def test_bad_input(teachers, tiny_teachers, corpus, tmp_path):
    teacher, (_, utts, _) = teachers["fairseq_hubert"], corpus
    fp = teacher_fingerprint("fairseq", tiny_teachers["fairseq_hubert"])
    low = write_wavs(tmp_path / "8k", n=1, sr=8000)
    cases = [
        (lambda: build_cache(tmp_path, teacher, fp, "1", utts + [("gone", str(tmp_path / "gone.wav"))], progress=False,
                             store_logits=False), r"gone.wav: audio file not found; fix the path"),
        (lambda: build_cache(tmp_path, teacher, fp, "1", read_wav_list(wav_scp=str(low)), progress=False, store_logits=False),
         r"utt0.wav: sample rate 8000 Hz, expected 16000 Hz; resample"),
        (lambda: build_cache(tmp_path, teacher, fp, "1,4", utts, progress=False, store_logits=False),
         r"layers=1,4: layer 4 is outside the teacher's 0..3 \(0 = input of the first layer\); pick layers in 0..3"),
        (lambda: CachedTeacher(TeacherTargetCache(tmp_path, fp, "1", store_logits=True), teacher),
         r"store_logits=True but the teacher has no logits"),
        (lambda: TeacherTargetCache(tmp_path, fp, "a,b"), r"layers='a,b': expected teacher layer indices"),
        (lambda: TeacherTargetCache(tmp_path, fp, "1", dtype="bfloat16"), r"dtype='bfloat16': choose float16 or float32"),
        (lambda: teacher_fingerprint("fairseq", str(tmp_path / "missing.pt")), r"missing.pt: file not found"),
        (lambda: teacher_fingerprint("torchaudio", "hubert_base"), r"torchaudio factory has random weights"),
        (lambda: CachedTeacher(TeacherTargetCache(tmp_path / "empty", fp, "1", store_logits=False), mode="read"),
         r"empty; build it with 'python -m kd_core.cache build"),
        (lambda: CachedTeacher(TeacherTargetCache(tmp_path, fp, "1", store_logits=False), mode="fill"),
         r"mode='fill' needs the teacher"),
    ]
    for call, msg in cases:
        with pytest.raises(KDConfigError, match=msg) as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(SystemExit, match=r"error: --layers=7: layer 7 is outside the teacher's 0..3"):
        main(["build", "--teacher_type", "fairseq", "--teacher_path", str(tiny_teachers["fairseq_hubert"]), "--layers", "7",
              "--out", str(tmp_path), "--wav_scp", str(corpus[0])])
    with pytest.raises(SystemExit, match=r"error: .*no teacher cache in it"):
        main(["status", "--out", str(tmp_path / "8k")])


STATUS = ("import sys; from kd_core.cache import main; rc = main(['status', '--out', sys.argv[1]]);"
          "bad = [m for m in ('espnet2', 'fairseq', 'espnet_model_zoo') if m in sys.modules]; assert not bad, bad; sys.exit(rc)")


def test_cli_build_and_status(tiny_teachers, corpus, tmp_path, capsys):
    """``python -m kd_core.cache build`` over a wav.scp, ``status`` (which imports no toolkit), a second build
    over the same audio as a fairseq manifest; the command-line cache is the one the Python API finds."""
    scp, utts, wavs = corpus
    ckpt = str(tiny_teachers["fairseq_w2v2_ctc"])
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    build = subprocess.run([sys.executable, "-m", "kd_core.cache", "build", "--teacher_type", "fairseq", "--teacher_path", ckpt,
                            "--layers", "1,3", "--logits", "--dtype", "float16", "--out", str(tmp_path / "cache"),
                            "--wav_scp", str(scp), "--shard_size", "4", "--no_progress"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    status = subprocess.run([sys.executable, "-c", STATUS, str(tmp_path / "cache")], capture_output=True, text=True, env=env)
    assert status.returncode == 0, status.stderr  # and no toolkit was imported
    assert "6/6 utterances cached, 2 shards" in status.stdout and "; complete" in status.stdout
    tsv = tmp_path / "train.tsv"  # the same audio listed as a fairseq manifest: nothing to recompute
    tsv.write_text(f"{Path(utts[0][1]).parent}\n" + "".join(f"{Path(p).name}\t{sf.info(p).frames}\n" for _, p in utts))
    assert main(["build", "--teacher_type", "fairseq", "--teacher_path", ckpt, "--layers", "3,1", "--logits", "--out",
                 str(tmp_path / "cache"), "--manifest", str(tsv), "--shard_size", "4", "--no_progress"]) == 0
    assert "6/6 utterances cached, 4 shards" in capsys.readouterr().out
    cache = TeacherTargetCache(tmp_path / "cache", teacher_fingerprint("fairseq", ckpt), [1, 3], "float16", True)
    wav, lens = pad_batch(wavs)
    assert cache.complete and cache.lookup(wav, lens) is not None


def test_keys_ignore_padding_and_dtype():
    w = torch.randn(2, 1000, generator=torch.Generator().manual_seed(0))
    lens = torch.tensor([1000, 600])
    padded = torch.cat([w, torch.randn(2, 50)], 1)
    keys = utterance_keys(w, lens)
    assert keys == utterance_keys(padded, lens) == utterance_keys(w.double(), lens)
    assert keys[1] == utterance_keys(w[1:, :600], lens[1:])[0] and len(set(keys)) == 2


def test_cache_built_from_a_fairseq_manifest_serves_kaldi_lists(teachers, tiny_teachers, tmp_path):
    """The "vice versa" of tests/fairseq (a wav.scp-built cache serves fairseq batches): keys are sample
    hashes, so a cache built from a fairseq manifest in another folder serves audio read via a Kaldi wav.scp."""
    teacher = teachers["fairseq_hubert"]
    kaldi = write_wavs(tmp_path / "kaldi")
    copy = write_wavs(tmp_path / "fairseq_audio")  # the same samples, other files (as a fairseq data dir would hold)
    manifest = tmp_path / "train.tsv"
    manifest.write_text(f"{copy.parent}\n" + "".join(f"{p.name}\t{sf.info(str(p)).frames}\n"
                                                      for p in sorted(copy.parent.glob("*.wav"))))
    fp = teacher_fingerprint("fairseq", tiny_teachers["fairseq_hubert"])
    build_cache(tmp_path / "cache", teacher, fp, [1, 3], read_wav_list(manifest=str(manifest)), dtype="float32",
                shard_size=4, progress=False)
    read = CachedTeacher(TeacherTargetCache(tmp_path / "cache", fp, [1, 3], "float32", False), mode="read")
    wav, lens = pad_batch([load_audio(p) for _, p in read_wav_list(wav_scp=str(kaldi))][::-1])
    assert_valid_frames(read(wav, lens), teacher(wav, lens), [1, 3], exact=False)  # built alone, read batched: float noise
