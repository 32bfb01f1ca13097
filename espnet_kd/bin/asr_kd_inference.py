#!/usr/bin/env python3
"""Decode ``asr_kd`` students: ``espnet2.bin.asr_inference``'s CLI (so ``asr.sh --asr_task asr_kd`` works).

The trained model is first exported (teacher/KD heads dropped, ``espnet_kd.export``). Students made
of stock ESPnet classes are then decoded by ESPnet's own ``asr_inference`` (beam search, LM, ...).
Students with the core's streaming front-end/encoder (``kd_streaming``/``kd_chunked``) are decoded
with greedy CTC, either offline (full forward under the chunk mask) or, with
``--kd_chunk_streaming true``, chunk by chunk from ``--kd_piece_ms`` waveform pieces (transducer students: ESPnet's
``BeamSearchTransducer`` over that encoder output); both write
ESPnet's ``<output_dir>/1best_recog/{text,token,token_int,score}``.
"""
import argparse
import logging
import sys
from pathlib import Path
from kd_core.errors import KDConfigError, require


def get_parser() -> argparse.ArgumentParser:
    from espnet2.bin.asr_inference import get_parser as stock_parser
    from espnet2.utils.types import str2bool

    parser = stock_parser()
    parser.description = __doc__.split("\n\n")[0]
    group = parser.add_argument_group("KD streaming students")
    group.add_argument("--kd_chunk_streaming", type=str2bool, default=False,
                       help="kd_chunked students: decode chunk by chunk (exact; same output as offline)")
    group.add_argument("--kd_piece_ms", type=float, default=100.0, help="waveform piece size fed per streaming step (ms)")
    group.add_argument("--kd_export_dir", type=str, default=None, help="where the exported student goes (default: next to the model)")
    return parser


def check_streamable(model, option: str) -> None:
    """One line unless ``model`` streams chunk by chunk exactly: front-end kd_streaming, encoder kd_chunked with
    chunks, no pre/post-encoder, and normalize none or global_mvn (a per-frame affine map; ``asr.sh``'s default)."""
    from espnet2.layers.global_mvn import GlobalMVN

    from espnet_kd.encoder import KDChunkedEncoder
    from espnet_kd.frontend import KDStreamingFrontend

    require(isinstance(model.frontend, KDStreamingFrontend) and isinstance(model.encoder, KDChunkedEncoder)
            and model.preencoder is None and model.postencoder is None,
            f"{option} needs frontend kd_streaming + encoder kd_chunked (no pre/post-encoder); for contextual_block "
            "encoders use espnet2.bin.asr_inference_streaming")
    require(model.normalize is None or isinstance(model.normalize, GlobalMVN),
            f"{option}: normalize {type(model.normalize).__name__} uses whole-utterance statistics and cannot stream; "
            "train with --normalize global_mvn or none (asr.sh: --feats_normalize global_mvn|none)")
    require(model.encoder.net.chunk_size > 0, f"{option}: the student has chunk_size=0 (full context)")


def streaming_encoder_output(model, speech, piece: int):
    """Encoder output ``(1, T, D)`` of a kd_streaming + kd_chunked ESPnet student fed ``speech (1, S)`` in
    ``piece``-sample pieces, chunk by chunk; global MVN applied per frame, as :meth:`encode` does."""
    import torch

    from kd_core.students.model import stream_hidden

    norm = model.normalize
    transform = (lambda f: norm(f, torch.tensor([f.size(1)]))[0]) if norm is not None else None
    return stream_hidden(model.frontend.net, model.encoder.net, speech.split(piece, dim=1), transform)[-1]


def decode_core_student(args: argparse.Namespace, config: Path, model_file: Path) -> None:
    """Greedy CTC decoding of a student with the core's front-end/encoder, offline or chunk by chunk; transducer
    students: ESPnet's ``BeamSearchTransducer`` (``--beam_size``) over the same encoder output."""
    import torch
    from espnet2.fileio.datadir_writer import DatadirWriter
    from espnet2.text.build_tokenizer import build_tokenizer
    from espnet2.text.token_id_converter import TokenIDConverter

    from kd_core.data import greedy_ctc

    from espnet_kd.task import ASRKDTask

    model, train_args = ASRKDTask.build_model_from_file(config, model_file, "cpu")
    model.eval()
    token_type = args.token_type or train_args.token_type
    bpemodel = args.bpemodel or train_args.bpemodel
    tokenizer = build_tokenizer(token_type=token_type, bpemodel=bpemodel) if token_type else None
    converter = TokenIDConverter(token_list=model.token_list)
    if args.kd_chunk_streaming:
        check_streamable(model, "--kd_chunk_streaming true")
    if model.use_transducer_decoder:
        from espnet2.asr.transducer.beam_search_transducer import BeamSearchTransducer

        search = BeamSearchTransducer(model.decoder, model.joint_network, beam_size=max(1, args.beam_size), nbest=1)
    loader = ASRKDTask.build_streaming_iterator(
        args.data_path_and_name_and_type, dtype=args.dtype, batch_size=1, key_file=args.key_file,
        num_workers=args.num_workers, preprocess_fn=ASRKDTask.build_preprocess_fn(train_args, False),
        collate_fn=ASRKDTask.build_collate_fn(train_args, False), allow_variable_data_keys=args.allow_variable_data_keys,
        inference=True)
    fs = getattr(model.frontend, "fs", 16000)
    piece = max(1, int(round(args.kd_piece_ms * fs / 1000)))
    with DatadirWriter(args.output_dir) as writer, torch.no_grad():
        for keys, batch in loader:
            speech = batch["speech"].float()
            if args.kd_chunk_streaming:
                enc = streaming_encoder_output(model, speech[0:1], piece)
            else:
                enc, _ = model.encode(speech, batch["speech_lengths"])
                enc = enc[0] if isinstance(enc, tuple) else enc
            if model.use_transducer_decoder:  # ESPnet's own transducer search (beam 1: greedy)
                best = search(enc[0])[0]
                token_int, score = [int(t) for t in best.yseq[1:]], float(best.score)
            else:
                logp = model.ctc.log_softmax(enc)
                token_int = greedy_ctc(logp, torch.tensor([logp.size(1)]))[0]
                score = float(logp.max(-1).values.sum())
            tokens = converter.ids2tokens(token_int)
            w = writer["1best_recog"]
            w["token"][keys[0]] = " ".join(tokens)
            w["token_int"][keys[0]] = " ".join(map(str, token_int))
            w["score"][keys[0]] = str(score)
            w["text"][keys[0]] = tokenizer.tokens2text(tokens) if tokenizer is not None else " ".join(tokens)


def main(cmd=None) -> None:
    from espnet_kd.export import export_student

    parser = get_parser()
    args = parser.parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    try:
        require(args.asr_train_config and args.asr_model_file, "--asr_train_config and --asr_model_file are required")
        model_file = Path(args.asr_model_file)
        out = Path(args.kd_export_dir) if args.kd_export_dir else model_file.parent / f"export_{model_file.stem}"
        config, model, stock = export_student(args.asr_train_config, args.asr_model_file, str(out))
        if stock and not args.kd_chunk_streaming:
            from espnet2.bin.asr_inference import inference

            kwargs = {k: v for k, v in vars(args).items() if not k.startswith("kd_") and k != "config"}
            kwargs.update(asr_train_config=str(config), asr_model_file=str(model))
            inference(**kwargs)
        else:
            decode_core_student(args, config, model)
    except KDConfigError as e:
        sys.exit(f"asr_kd_inference: error: {e}")


if __name__ == "__main__":
    main()
