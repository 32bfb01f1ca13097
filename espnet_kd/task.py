"""``ASRKDTask``: ESPnet's ASR task plus a frozen teacher, KD losses and streaming students.

Same CLI and YAML as ``asr_train``; added options: ``--teacher_type/--teacher_path/--teacher_conf``,
``--kd_loss/--kd_loss_conf`` and the choices ``--frontend kd_streaming``, ``--encoder kd_chunked``
and ``--model espnet_kd`` (default). ESPnet's module-level ``ClassChoices`` are copied, never mutated.
"""
from __future__ import annotations

import argparse
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from espnet2.asr.ctc import CTC
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.layers.global_mvn import GlobalMVN
from espnet2.tasks import asr as _asr
from espnet2.tasks.asr import ASRTask
from espnet2.torch_utils.initialize import initialize
from espnet2.train.abs_espnet_model import AbsESPnetModel
from espnet2.train.class_choices import ClassChoices
from espnet2.utils.get_default_kwargs import get_default_kwargs
from espnet2.utils.nested_dict_action import NestedDictAction
from espnet2.utils.types import str2bool, str_or_none

from kd_core.errors import require
from kd_core.losses.layerwise import parse_layer_map
from kd_core.losses.lfmmi_graph import cached_den_graph
from kd_core.distiller import teacher_codebook
from kd_core.losses.registry import DERIVED_KD_ARGS, KD_LOSSES, KDContext, build_kd_loss, needs_lattice
from kd_core.streaming import measure_frame_shift_ms
from kd_core.teachers import TEACHER_TYPES, load_teacher

from .encoder import KDChunkedEncoder
from .frontend import KDStreamingFrontend
from .model import BLOCK_ENCODERS, ESPnetASRKDModel


def _extend(choices: ClassChoices, default: str = None, **extra) -> ClassChoices:
    """A new ClassChoices with ESPnet's classes plus ``extra`` (ESPnet's object is left untouched)."""
    return ClassChoices(choices.name, classes={**choices.classes, **extra}, type_check=choices.base_type,
                        default=default if default is not None else choices.default, optional=choices.optional)


frontend_choices = _extend(_asr.frontend_choices, kd_streaming=KDStreamingFrontend)
encoder_choices = _extend(_asr.encoder_choices, kd_chunked=KDChunkedEncoder)
model_choices = _extend(_asr.model_choices, default="espnet_kd", espnet_kd=ESPnetASRKDModel)
kd_loss_choices = ClassChoices("kd_loss", classes=dict(KD_LOSSES), default="layerwise", optional=True)


def transcript_token_ids(args: argparse.Namespace) -> list:
    """Token-id sequences of the training transcripts (``text`` in --train_data_path_and_name_and_type),
    tokenised exactly as the preprocessor does."""
    from espnet2.text.build_tokenizer import build_tokenizer
    from espnet2.text.token_id_converter import TokenIDConverter

    texts = [p for p, name, _ in args.train_data_path_and_name_and_type if name == "text"]
    require(texts, "--kd_loss lfmmi: the denominator graph needs training transcripts ('text' in "
            "--train_data_path_and_name_and_type)")
    tokenizer = build_tokenizer(token_type=args.token_type, bpemodel=getattr(args, "bpemodel", None),
                                non_linguistic_symbols=getattr(args, "non_linguistic_symbols", None))
    conv = TokenIDConverter(token_list=args.token_list, unk_symbol=getattr(args, "unk_symbol", "<unk>"))
    with open(texts[0], encoding="utf-8") as f:
        return [conv.tokens2ids(tokenizer.text2tokens(line.rstrip("\n").partition(" ")[2])) for line in f]


def den_graph_sequences(args: argparse.Namespace, teacher, student_shift_ms: float, topology: str) -> list:
    """Token sequences for the LF-MMI denominator bigram: training transcripts, or the teacher's 1-best
    on up to ``--kd_den_graph_max_utts`` training utterances (``--kd_den_graph_source teacher``)."""
    if getattr(args, "kd_den_graph_source", "transcripts") == "transcripts":
        return transcript_token_ids(args)
    from kd_core.data import load_audio, read_wav_list
    from kd_core.losses.lfmmi import teacher_den_sequences

    scps = [p for p, name, kind in args.train_data_path_and_name_and_type if name == "speech" and kind == "sound"]
    require(scps, "--kd_den_graph_source teacher: needs 'speech' as a sound wav.scp in --train_data_path_and_name_and_type")
    utts = read_wav_list(wav_scp=scps[0])[: args.kd_den_graph_max_utts]
    logging.info("denominator graph: decoding %d training utterances with the teacher", len(utts))
    waves = (load_audio(path, teacher.sample_rate) for _, path in utts)
    return teacher_den_sequences(teacher, waves, student_shift_ms, topology)


def student_frame_shift_ms(model: ESPnetASRModel, fs: int) -> float:
    """Encoder output frame shift, measured from output lengths (model in eval mode, no gradients)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        shift = measure_frame_shift_ms(lambda n: int(model.encode(torch.zeros(1, n), torch.tensor([n]))[1]), fs)
    model.train(was)
    return shift


def check_resumable(args: argparse.Namespace) -> None:
    """``--resume true`` over a ``checkpoint.pth`` that a kill cut short (ESPnet writes it in place, not atomically)
    fails with one line instead of a traceback from inside the trainer; the torn file is left as it is."""
    ckpt = Path(getattr(args, "output_dir", None) or ".") / "checkpoint.pth"
    if getattr(args, "resume", False) and ckpt.is_file():
        require(zipfile.is_zipfile(ckpt), f"--output_dir {ckpt.parent}: checkpoint.pth is incomplete (the run was killed while "
                f"ESPnet was writing it); delete it to restart training, the epoch snapshots (*epoch.pth) are intact")


def loader_conf(teacher_type: str, teacher_conf: Dict[str, Any]) -> Dict[str, Any]:
    """``--teacher_conf`` -> ``load_teacher`` options: ``task=asr_kd`` (an ESPnet teacher trained with this task: a
    two-stage stage-1 student, a transducer) becomes the task class that builds it."""
    conf = dict(teacher_conf)
    if conf.get("task") is not None:
        require(teacher_type == "espnet" and conf["task"] in ("asr", "asr_kd"),
                f"--teacher_conf task={conf['task']}: use asr or asr_kd, with --teacher_type espnet")
        conf["task_class"] = ASRKDTask if conf.pop("task") == "asr_kd" else ASRTask
    return conf


class ASRKDTask(ASRTask):
    """ESPnet ASR task with knowledge distillation from a frozen teacher."""

    class_choices_list = [
        frontend_choices, _asr.specaug_choices, _asr.normalize_choices, model_choices, _asr.preencoder_choices,
        encoder_choices, _asr.postencoder_choices, _asr.decoder_choices, _asr.preprocessor_choices, kd_loss_choices,
    ]

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        super().add_task_arguments(parser)
        cls.add_kd_arguments(parser.add_argument_group(description="Knowledge distillation"))

    @classmethod
    def kd_options(cls) -> Tuple[str, ...]:
        """Every option this task adds to ``asr_train``'s (its KD argument group and the ``kd_loss`` choice):
        what an exported student config must not contain (:mod:`espnet_kd.export`)."""
        parser = argparse.ArgumentParser(add_help=False)
        cls.add_kd_arguments(parser)
        return tuple(a.dest for a in parser._actions) + (kd_loss_choices.name, f"{kd_loss_choices.name}_conf")

    @staticmethod
    def add_kd_arguments(group) -> None:
        """The task's own options (``group``: an argparse parser or argument group)."""
        group.add_argument("--teacher_type", type=str_or_none, default=None, choices=list(TEACHER_TYPES) + [None],
                           help="fairseq (.pt), torchaudio (factory name or fairseq .pt) or espnet (packed zip / zoo name)")
        group.add_argument("--teacher_path", type=str_or_none, default=None, help="Teacher checkpoint, zip or name")
        group.add_argument("--teacher_conf", action=NestedDictAction, default=dict(),
                           help="Teacher loader options (fairseq: data_dir; espnet: cachedir, task=asr|asr_kd; "
                           "torchaudio: normalize_waveform; all: compute_dtype=float32|bfloat16|float16, what the teacher computes in)")
        group.add_argument("--kd_den_graph_source", type=str, default="transcripts", choices=["transcripts", "teacher"],
                           help="--kd_loss lfmmi: estimate the denominator bigram from the training transcripts or from "
                           "the teacher's 1-best on the training audio (no transcripts needed)")
        group.add_argument("--kd_den_graph_max_utts", type=int, default=2000,
                           help="--kd_den_graph_source teacher: training utterances decoded")
        group.add_argument("--kd_init_from_teacher", type=str2bool, default=False,
                           help="Copy the teacher's waveform CNN (frontend kd_streaming, kind wav_cnn, same conv layers) "
                           "and CTC head into the student where shapes match (DistillW2V2 stage 1)")
        group.add_argument("--teacher_cache_dir", type=str_or_none, default=None,
                           help="Teacher-target cache (kd_core.cache): read the teacher's layers from here instead of "
                           "running it; shared with fairseq and 'python -m kd_core.cache build'")
        group.add_argument("--teacher_cache_mode", type=str, default="fill", choices=["fill", "read"],
                           help="fill: compute and store targets not cached yet; read: every utterance must be cached")
        group.add_argument("--teacher_cache_dtype", type=str, default="float16", choices=["float16", "float32"],
                           help="Storage precision of cached targets")

    @classmethod
    def required_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        """Only ``speech``: without ``text`` a batch is distilled with the KD loss alone."""
        return ("speech",)

    @classmethod
    def optional_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return ("text",) + tuple(super().optional_data_names(train, inference))

    @classmethod
    def get_default_config(cls) -> Dict[str, Any]:
        config = super().get_default_config()
        if config.get("model") == "espnet_kd":  # show ESPnetASRModel's options too
            config["model_conf"] = {**get_default_kwargs(ESPnetASRModel), **config["model_conf"]}
        if config.get("kd_loss") is not None:
            conf = {k: v for k, v in config["kd_loss_conf"].items() if k not in DERIVED_KD_ARGS}
            config["kd_loss_conf"] = {"layer_map": None, **conf}
        return config

    @classmethod
    def build_student(cls, args: argparse.Namespace) -> ESPnetASRModel:
        """The ASR model alone (ESPnet's ``ASRTask.build_model`` steps, with this task's choices)."""
        if isinstance(args.token_list, str):
            with open(args.token_list, encoding="utf-8") as f:
                args.token_list = [line.rstrip() for line in f]
        require(isinstance(args.token_list, (list, tuple)), "--token_list: give a token list file")
        token_list = list(args.token_list)
        vocab_size = len(token_list)
        if args.input_size is None:
            frontend = frontend_choices.get_class(args.frontend)(**args.frontend_conf)
            input_size = frontend.output_size()
        else:
            args.frontend, args.frontend_conf, frontend = None, {}, None
            input_size = args.input_size
        specaug = _asr.specaug_choices.get_class(args.specaug)(**args.specaug_conf) if args.specaug else None
        normalize = _asr.normalize_choices.get_class(args.normalize)(**args.normalize_conf) if args.normalize else None
        preencoder = None
        if getattr(args, "preencoder", None):
            preencoder = _asr.preencoder_choices.get_class(args.preencoder)(**args.preencoder_conf)
            input_size = preencoder.output_size()
        encoder = encoder_choices.get_class(args.encoder)(input_size=input_size, **args.encoder_conf)
        out_size = encoder.output_size()
        postencoder = None
        if getattr(args, "postencoder", None):
            postencoder = _asr.postencoder_choices.get_class(args.postencoder)(input_size=out_size, **args.postencoder_conf)
            out_size = postencoder.output_size()
        decoder, joint_network = None, None
        model_class = model_choices.get_class(getattr(args, "model", None) or "espnet")
        if getattr(args, "decoder", None) == "transducer":  # as ASRTask.build_model builds it
            from espnet2.asr_transducer.joint_network import JointNetwork

            require(issubclass(model_class, ESPnetASRKDModel), f"--decoder transducer with --model {args.model}: ESPnet's "
                    "own model needs warprnnt_pytorch (no PyPI wheel); use --model espnet_kd (torchaudio's RNN-T loss)")
            decoder = _asr.decoder_choices.get_class("transducer")(vocab_size, embed_pad=0, **args.decoder_conf)
            joint_network = JointNetwork(vocab_size, out_size, decoder.dunits, **(getattr(args, "joint_net_conf", None) or {}))
        elif getattr(args, "decoder", None):
            decoder = _asr.decoder_choices.get_class(args.decoder)(vocab_size=vocab_size, encoder_output_size=out_size,
                                                                     **args.decoder_conf)
        ctc = CTC(odim=vocab_size, encoder_output_size=out_size, **args.ctc_conf)
        model = model_class(vocab_size=vocab_size, frontend=frontend, specaug=specaug, normalize=normalize,
                            preencoder=preencoder, encoder=encoder, postencoder=postencoder, decoder=decoder, ctc=ctc,
                            joint_network=joint_network, token_list=token_list, **args.model_conf)
        if getattr(args, "init", None) is not None:
            initialize(model, args.init)
        return model

    @classmethod
    def build_model(cls, args: argparse.Namespace) -> AbsESPnetModel:
        """Student + (unless collecting stats) the frozen teacher and the KD loss; bad options fail here."""
        check_resumable(args)
        model = cls.build_student(args)
        if not isinstance(model, ESPnetASRKDModel) or getattr(args, "collect_stats", False):
            return model
        if isinstance(model.encoder, KDChunkedEncoder) and model.encoder.net.chunk_size > 0:
            require(model.normalize is None or isinstance(model.normalize, GlobalMVN),
                    f"--normalize {args.normalize}: whole-utterance statistics cannot be applied chunk by chunk by a streaming "
                    "kd_chunked student; use --normalize global_mvn or none (asr.sh: --feats_normalize global_mvn|none)")
        if model.kd_weight == 0:
            logging.info("model_conf.kd_weight=0: training without a teacher")
            return model
        require(args.teacher_type is not None and args.teacher_path is not None,
                "--teacher_type and --teacher_path are required when model_conf.kd_weight > 0")
        require(getattr(args, "kd_loss", None) is not None, "--kd_loss: choose a KD loss (e.g. layerwise) or set model_conf.kd_weight=0")
        teacher_conf = loader_conf(args.teacher_type, args.teacher_conf)
        teacher = load_teacher(args.teacher_type, args.teacher_path, **teacher_conf)
        fs = getattr(model.frontend, "fs", None) or int(args.frontend_conf.get("fs", 16000))
        require(teacher.sample_rate == fs, f"--frontend_conf fs={fs}, but the teacher expects {teacher.sample_rate} Hz; "
                "resample the data and set fs accordingly")
        conf = dict(args.kd_loss_conf)
        n_layers = model.num_student_layers
        if type(model.encoder).__name__ in BLOCK_ENCODERS and conf.get("layer_map"):
            bad = [s for _, s in parse_layer_map(conf["layer_map"], teacher.num_layers, n_layers, "--kd_loss_conf layer_map") if s != n_layers]
            require(not bad, f"--kd_loss_conf layer_map: student layers {bad} of {args.encoder} are block-processed "
                    f"during training; map teacher layers to the last student layer ({n_layers}) only")
        ctx = KDContext(teacher_dim=teacher.hidden_size, teacher_layers=teacher.num_layers, teacher_shift_ms=teacher.frame_shift_ms,
                        student_dim=model.encoder.output_size() if model.postencoder is None else model.postencoder.output_size(),
                        student_layers=n_layers, student_shift_ms=student_frame_shift_ms(model, fs),
                        encoder=model.encoder.net if isinstance(model.encoder, KDChunkedEncoder) else None,
                        den_graph=lambda: cached_den_graph(den_graph_sequences(args, teacher, ctx.student_shift_ms,
                                                                               conf.get("topology", "ctc")),
                                                           len(args.token_list), os.path.join(args.output_dir, "den_graph"),
                                                           topology=conf.get("topology", "ctc")),
                        teacher_vocab=teacher.vocab_size, student_vocab=len(args.token_list),
                        codebook=teacher_codebook(teacher, "--teacher_path"),
                        teacher_transducer=bool(getattr(teacher, "is_transducer", False)),
                        student_transducer=model.use_transducer_decoder)
        kd_loss = build_kd_loss(args.kd_loss, conf, ctx, option="--kd_loss_conf")
        if getattr(args, "teacher_cache_dir", None):
            require(not needs_lattice(kd_loss), f"--teacher_cache_dir with --kd_loss {args.kd_loss}: the cache stores hidden "
                    "states and logits, not transducer lattices; drop --teacher_cache_dir")
            from kd_core.cache import cached_teacher_for_loss

            teacher = cached_teacher_for_loss(kd_loss, teacher, args.teacher_type, args.teacher_path, args.teacher_cache_dir,
                                              args.teacher_cache_mode, args.teacher_cache_dtype, **teacher_conf)
        if getattr(args, "kd_init_from_teacher", False):
            from kd_core.students.init_from_teacher import init_from_teacher

            init_from_teacher(teacher, getattr(model.frontend, "net", None), model.ctc.ctc_lo)
        model.attach_teacher(teacher, kd_loss)
        return model
