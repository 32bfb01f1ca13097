"""The zoo's build pipeline at toy scale, through the real fairseq-hydra-train: MFCC k-means labels,
HuBERT pre-training with the zoo's config (fairseq's hubert_pretraining task + hubert criterion), CTC
fine-tuning with fairseq's HubertCtc (registered buildable as kd_hubert_ctc), packing as fp16 hubert_ctc,
and loading through the project's fairseq teacher loader with the same outputs as fairseq's own model."""
import shutil

import pytest
import torch

pytestmark = pytest.mark.slow

TINY_MODEL = ["model.encoder_layers=2", "model.encoder_embed_dim=64", "model.encoder_ffn_embed_dim=128",
              "model.encoder_attention_heads=4", "model.conv_pos=16", "model.conv_pos_groups=4", "model.final_dim=32",
              "model.conv_feature_layers='[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2'"]


def test_zoo_pipeline_pretrain_finetune_pack_load(fairseq_data, tmp_path, monkeypatch):
    from tools import build_zoo, zoo_eval
    from fairseq import checkpoint_utils
    from fairseq.models.hubert.hubert_asr import HubertCtc

    from kd_core.data import load_audio, pad_batch
    from kd_core.teachers import load_teacher

    letters = fairseq_data["letters"]
    pre, ft = tmp_path / "pretrain", tmp_path / "finetune"
    pre.mkdir()
    ft.mkdir()
    for split in ("train", "valid"):
        shutil.copy(letters / f"{split}.tsv", pre / f"{split}.tsv")
    for f in letters.iterdir():
        shutil.copy(f, ft / f.name)
    build_zoo.make_kmeans_labels(tmp_path, jobs=1, centroids=tmp_path / "km.npy", k=8, share=1.0)
    km = (pre / "train.km").read_text().splitlines()
    assert len(km) == 12 and {int(x) for line in km for x in line.split()} <= set(range(8))

    run = tmp_path / "runs/hubert"
    build_zoo.fairseq_train("hubert_mini_pretrain", [f"task.data={pre}", f"task.label_dir={pre}", *TINY_MODEL,
                                                     "optimization.max_update=3"], run, threads=1)
    log = (run / "train.log").read_text()
    assert "num_updates: 3 >= max_update: 3" in log and "train_loss_m_0" in log  # the hubert criterion's masked loss
    # the same command with a larger budget resumes (the checkpoint's task state pickles a fairseq Dictionary)
    build_zoo.fairseq_train("hubert_mini_pretrain", [f"task.data={pre}", f"task.label_dir={pre}", *TINY_MODEL,
                                                     "optimization.max_update=4"], run, threads=1)
    log = (run / "train.log").read_text()
    assert "checkpoint_last.pt (epoch" in log.split("num_updates: 3 >= max_update: 3")[1] and "num_updates: 4 >= max_update: 4" in log
    base = tmp_path / "hubert_mini.pt"
    build_zoo.pack(run / "checkpoint_last.pt", base)
    pretrained = load_teacher("fairseq", str(base))
    assert pretrained.w2v.final_proj.out_features == 32 and pretrained.w2v.label_embs_concat.shape == (8 + 4, 32)
    assert all(p.dtype == torch.float16 for p in torch.load(base, weights_only=False)["model"].values() if p.is_floating_point())

    # more pre-training on a machine without the run (exp/ does not travel): fairseq's finetune_from_model starts from
    # the shipped weights with a fresh optimizer (update counter from 0), and the run joins the model's history
    from tools import zoo_cards

    more = tmp_path / "runs/more"
    args = [f"task.data={pre}", f"task.label_dir={pre}", *TINY_MODEL, f"checkpoint.finetune_from_model={base}"]
    build_zoo.fairseq_train("hubert_mini_pretrain", [*args, "optimization.max_update=2"], more, threads=1)
    log = (more / "train.log").read_text()
    assert f"loading pretrained model from {base}" in log and "num_updates: 2 >= max_update: 2" in log
    monkeypatch.setattr(zoo_cards, "ZOO", tmp_path / "zoo")
    (tmp_path / "zoo/hubert_mini").mkdir(parents=True)
    shutil.copy(base, tmp_path / "zoo/hubert_mini/hubert_mini.pt")
    zoo_cards.record_run("hubert_mini", "hubert", run / "train.log", None, 4, 3e-4)
    for _ in range(2):  # recording a run again replaces its record
        hist = zoo_cards.record_run("hubert_mini", "more", more / "train.log", "ab" * 32, 2, 3e-4)
    assert [(r["run"], r["updates"]) for r in hist["runs"]] == [("hubert", 4), ("more", 2)]
    card = zoo_cards.hubert_mini_card(["- data"], "cd" * 32)
    assert "| updates | 6 (" in card and "| more | 2 | update 4 (sha256 `abababababab...`)" in card
    hist = zoo_cards.record_run("hubert_mini", "hubert", run / "train.log", None, 4, 3e-4)  # from scratch: a new history
    assert [r["run"] for r in hist["runs"]] == ["hubert"]

    run_ft = tmp_path / "runs/ctc"
    build_zoo.fairseq_train("hubert_mini_ctc", [f"task.data={ft}", f"task.label_dir={ft}", f"model.w2v_path={base}",
                                                "model.mask_channel_length=4",
                                                "model.freeze_finetune_updates=1", "optimization.max_update=3",
                                                "dataset.validate_interval_updates=2"], run_ft, threads=1)
    shipped = tmp_path / "hubert_mini_ctc.pt"
    build_zoo.pack(run_ft / "checkpoint_best.pt", shipped, model_name="hubert_ctc", pretrained=base)
    state = torch.load(shipped, weights_only=False)
    assert state["cfg"]["model"]["_name"] == "hubert_ctc" and state["cfg"]["model"]["w2v_args"]["model"]["encoder_layers"] == 2
    # the CTC model's history: one record per fine-tuning (keyed by the hubert_mini it started from), the scratch
    # baseline beside them, and the card's quality bar read from both
    from tools import zoo_baseline

    (tmp_path / "zoo/hubert_mini_ctc").mkdir()
    shutil.copy(shipped, tmp_path / "zoo/hubert_mini_ctc/hubert_mini_ctc.pt")
    test = {"test": {"utterances": 4, "wer": 50.0, "cer": 20.0}}
    for start in ("ab" * 32, "cd" * 32, "cd" * 32):
        hist = zoo_cards.record_run("hubert_mini_ctc", "ctc", run_ft / "train.log", start, 3, 3e-4, curve=zoo_cards.CTC_CURVE,
                                    extra={"pretrain_updates": 4, "test": test})
    assert [r["start"][:2] for r in hist["runs"]] == ["ab", "cd"] and hist["runs"][-1]["curve"][-1]["update"] == 3
    card = zoo_cards.hubert_mini_ctc_card(["- data"], "ef" * 32)
    assert "No scratch baseline yet" in card and card.count("| ctc | update 4 | 3 |") == 2
    hist = zoo_baseline.record_baseline(run_ft / "train.log", run_ft / "checkpoint_best.pt",  # any fairseq CTC run
                                        {"test": {"utterances": 4, "wer": 80.0}})
    assert len(hist["runs"]) == 2 and [c["wer"] for c in hist["baseline"]["curve"]] == [c["wer"] for c in hist["runs"][-1]["curve"]]
    card = zoo_cards.hubert_mini_ctc_card(["- data"], "ef" * 32)
    assert "on both test sets): test +37.5 %: **met**" in card  # (80 - 50) / 80
    zoo_baseline.record_baseline(run_ft / "train.log", run_ft / "checkpoint_best.pt", {"test": {"utterances": 4, "wer": 60.0}})
    assert "test +16.7 %: **not met**" in zoo_cards.hubert_mini_ctc_card(["- data"], "ef" * 32)
    zoo_baseline.plot_curves(hist, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    # fairseq's own model: stock loader (after importing the user dir, as fairseq does), weights rounded as shipped
    import fairseq_kd  # noqa: F401

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(run_ft / "checkpoint_best.pt")])
    own = models[0].eval()
    assert isinstance(own, HubertCtc)
    base.unlink()  # the shipped fine-tuned model needs neither its w2v_path nor the pre-training labels
    shutil.rmtree(pre)
    teacher = load_teacher("fairseq", str(shipped), data_dir=str(ft))
    assert teacher.vocab_size == len((ft / "dict.ltr.txt").read_text().splitlines()) + 4
    with torch.no_grad():
        for p in own.parameters():
            p.copy_(p.half().float())
        paths = [line.split("\t")[0] for line in (letters / "test.tsv").read_text().splitlines()[1:]]
        root = (letters / "test.tsv").read_text().splitlines()[0]
        wav, lens = pad_batch([load_audio(f"{root}/{p}") for p in paths[:2]])
        got = teacher(wav[:1, : lens[0]], lens[:1]).logits[0]
        want = own(source=wav[:1, : lens[0]], padding_mask=None)["encoder_out"][:, 0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))

    # batched, length-sorted evaluation: each hypothesis is that utterance's own greedy decoding
    from kd_core.data import greedy_ctc

    res = zoo_eval.evaluate_ctc_teacher(shipped, ft, {"test": letters / "test.tsv"}, batch=3)
    symbols = zoo_eval.fairseq_letter_symbols(ft / "dict.ltr.txt")
    for path, hyp in zip(paths, res["test"]["hyps"]):
        w = load_audio(f"{root}/{path}")[None]
        t = teacher(w, torch.tensor([w.size(1)]))
        assert hyp == zoo_eval.letters_to_words(greedy_ctc(t.logits, t.lengths)[0], symbols)
    assert len(res["test"]["hyps"]) == 4
