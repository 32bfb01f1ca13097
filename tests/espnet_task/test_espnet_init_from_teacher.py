"""--kd_init_from_teacher through the ESPnet task's own build_model (the path asr_kd_train takes)."""
import torch

from kd_core.teachers import load_teacher

#: the tiny fairseq teachers' conv_feature_layers (tools/make_tiny_teachers.py)
CONV = "[[32, 10, 5], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 2, 2], [32, 2, 2]]"


def _build(tokens, teacher_path, tmp_path, *extra):
    from espnet_kd.task import ASRKDTask

    args = ASRKDTask.get_parser().parse_args([
        "--token_list", str(tokens), "--output_dir", str(tmp_path), "--frontend", "kd_streaming",
        "--frontend_conf", "kind=wav_cnn", "--frontend_conf", f"conv_layers={CONV}", "--normalize", "none",
        "--encoder", "kd_chunked", "--encoder_conf", "d_model=64", "--encoder_conf", "num_layers=2", "--encoder_conf",
        "ffn_dim=64", "--decoder", "none", "--model_conf", "ctc_weight=1.0", "--teacher_type", "fairseq",
        "--teacher_path", str(teacher_path), "--kd_loss_conf", "layer_map='3:2'", *extra])
    torch.manual_seed(0)
    return ASRKDTask.build_model(args)


def test_student_cnn_and_ctc_head_start_from_the_teacher(tiny_teachers, tmp_path):
    path = tiny_teachers["fairseq_w2v2_ctc"]
    teacher = load_teacher("fairseq", str(path))
    tokens = tmp_path / "tokens.txt"  # the teacher's output units, in its order: one CTC head fits the other
    tokens.write_text("\n".join(["<blank>"] + [f"tok{i}" for i in range(teacher.vocab_size - 1)]) + "\n")
    model = _build(tokens, path, tmp_path / "a", "--kd_init_from_teacher", "true")  # d_model = the teacher's 64
    blocks = teacher.conv_blocks()
    convs = model.frontend.net.convs
    assert all(torch.equal(convs[i].weight, blocks[i][0].weight) for i in range(len(blocks)))
    assert torch.equal(model.ctc.ctc_lo.weight, teacher.prediction_layer().weight)
    plain = _build(tokens, path, tmp_path / "b")  # without the option: the student's own initialisation
    assert not torch.equal(plain.frontend.net.convs[0].weight, blocks[0][0].weight)
