"""Hard targets (kd_core.pseudo_label): the CLI labels a Kaldi dir with a teacher loaded by the real loaders, each
utterance's label is the one it gets alone (not batch-dependent), the confidence filter keeps exactly the utterances
at or above it, and an empty result is one line; ids -> words for the three token inventories; transducer teachers'
greedy labels equal the core transducer's own batched greedy search."""
import math

import pytest
import torch

from kd_core.pseudo_label import ctc_hypotheses, decode_audio, ids_to_text, main, transducer_hypotheses


def test_ids_to_text_for_fairseq_letters_sentencepiece_and_espnet_chars():
    assert ids_to_text([4, 5, 6, 4, 5, 7, 3], ["<s>", "<pad>", "</s>", "<unk>", "A", "|", "B", "C"]) == "A BA C"
    assert ids_to_text([1, 2, 3], ["<blank>", "\u2581the", "\u2581ca", "t"]) == "the cat"
    assert ids_to_text([3, 2, 4, 1], ["<blank>", "<unk>", "<space>", "a", "b"]) == "a b"


def test_ctc_confidence_is_the_geometric_mean_of_the_best_path():
    g = torch.Generator().manual_seed(0)
    logits, lengths = torch.randn(2, 6, 5, generator=g), torch.tensor([6, 3])
    hyps = ctc_hypotheses(logits, lengths)
    for b in range(2):
        p = logits[b, :lengths[b]].softmax(-1).max(-1).values
        assert hyps[b].confidence == pytest.approx(math.prod(p.tolist()) ** (1 / int(lengths[b])), rel=1e-5)


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    from tools.make_corpus import make_synthetic_corpus

    root = tmp_path_factory.mktemp("unlab")
    make_synthetic_corpus(root / "c", seed=5, num_train=6, num_valid=1, num_test=1, jobs=1)
    return root / "c" / "kaldi" / "train"


def test_cli_labels_a_kaldi_dir_with_a_fairseq_teacher_and_filters_by_confidence(tiny_teachers, unlabelled, tmp_path):
    from kd_core.data import read_kaldi_dir
    from kd_core.teachers import load_teacher
    from tools.zoo_eval import fairseq_letter_symbols

    ckpt, labels = tiny_teachers["fairseq_w2v2_ctc"], tiny_teachers["fairseq_w2v2_ctc"].parent / "fairseq_labels"
    args = ["--teacher_type", "fairseq", "--teacher_path", str(ckpt), "--dict_dir", str(labels), "--data_dir", str(unlabelled)]
    main([*args, "--out_dir", str(tmp_path / "all"), "--batch", "4"])
    utts = read_kaldi_dir(str(unlabelled))
    conf = dict(line.split() for line in (tmp_path / "all/confidence").read_text().splitlines())
    text = dict(line.split(" ", 1) for line in (tmp_path / "all/text").read_text().splitlines())
    assert sorted(conf) == sorted(u.uid for u in utts)
    teacher, symbols = load_teacher("fairseq", str(ckpt)), fairseq_letter_symbols(labels / "dict.ltr.txt")
    for u in utts:  # each label is the utterance decoded alone
        alone = ids_to_text(decode_audio(teacher, [u.path], batch=1)[0].ids, symbols)
        assert text.get(u.uid, "") == alone
    assert len(text) > 1, "the test needs non-empty labels"
    # a threshold between the confidences keeps exactly those at or above it
    values = sorted(float(conf[k]) for k in text)
    cut = (values[0] + values[-1]) / 2
    main([*args, "--out_dir", str(tmp_path / "some"), "--min_confidence", f"{cut}"])
    kept = {line.split()[0] for line in (tmp_path / "some/text").read_text().splitlines()}
    assert kept == {k for k in text if float(conf[k]) >= cut} and 0 < len(kept) < len(text)
    wav_ids = {line.split()[0] for line in (tmp_path / "some/wav.scp").read_text().splitlines()}
    assert wav_ids == kept
    with pytest.raises(SystemExit, match="no pseudo-label kept.*lower --min_confidence"):
        main([*args, "--out_dir", str(tmp_path / "none"), "--min_confidence", "1.0"])
    assert not (tmp_path / "none" / "text").exists()


def test_transducer_labels_equal_the_transducers_own_greedy_search():
    from kd_core.students.transducer import TransducerStudent
    from kd_core.teachers.student_teacher import StudentTeacher

    torch.manual_seed(0)
    model = TransducerStudent(9, frontend="fbank", frontend_conf=dict(n_mels=40, channels=8), d_model=32, num_layers=2,
                              num_heads=4, ffn_dim=64, conv_kernel=5, dropout=0.0, chunk_size=0)
    with torch.no_grad():
        model.joiner.out.bias.copy_(torch.linspace(-0.5, 0.5, 9))
        model.joiner.out.bias[0] = 0.2
    teacher = StudentTeacher(model)
    wav, lens = 0.1 * torch.randn(2, 12000, generator=torch.Generator().manual_seed(1)), torch.tensor([12000, 7000])
    out = model(wav, lens)
    own = model.greedy(out.hidden[-1], out.lengths).hyps
    hyps = transducer_hypotheses(teacher, wav, lens)
    assert [h.ids for h in hyps] == own and sum(map(len, own)) > 0
    assert all(0 < h.confidence <= 1 for h in hyps)
