"""Task ``kd_audio``: fairseq audio manifests with optional transcripts, checked before training.

Data layout is fairseq's (``examples/wav2vec``): ``<data>/<split>.tsv`` (first line the audio root,
then ``relative/path.wav<TAB>num_samples``), optional ``<split>.<labels>`` transcripts and
``dict.<labels>.txt``. With ``labels: null`` batches carry audio only and are distilled with the
KD loss alone. Waveforms are always padded, never cropped, and never normalised here: the teacher
normalises its own input as its checkpoint says (``task.normalize``), the student sees raw audio.

The task builds the model and, unless fairseq is reloading a checkpoint (decoding), loads the
frozen teacher named in the model config; criteria find both through :attr:`KDAudioTask.kd_model`.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Optional

from fairseq.tasks import register_task
from fairseq.tasks.audio_finetuning import AudioFinetuningConfig, AudioFinetuningTask
from fairseq.tasks.audio_pretraining import AudioPretrainingTask

from kd_core.errors import KDConfigError, require

from ..errors import one_line_errors

logger = logging.getLogger(__name__)


@dataclass
class KDAudioConfig(AudioFinetuningConfig):
    labels: Optional[str] = field(default="ltr", metadata={
        "help": "transcript extension: <split>.<labels> next to <split>.tsv and dict.<labels>.txt; "
                "null distils unlabelled audio (KD loss only)"})
    enable_padding: bool = field(default=True, metadata={"help": "pad utterances in a batch (never crop them)"})
    check_audio: bool = field(default=True, metadata={
        "help": "before training, check that every manifest file exists and has task.sample_rate (header reads)"})


def check_manifest(manifest: str, sample_rate: int, check_audio: bool = True, max_sample_size: Optional[int] = None) -> int:
    """Validate a fairseq audio manifest; returns the number of utterances.

    Raises :class:`~kd_core.errors.KDConfigError` naming the manifest line and the fix for a
    missing manifest, a missing or unreadable audio file, a sample rate other than ``sample_rate``, or an
    utterance longer than ``max_sample_size`` (fairseq would crop it, cutting audio its transcript still has).
    """
    import soundfile as sf

    require(os.path.isfile(manifest), f"{manifest}: manifest not found; point task.data at a folder with "
            "<split>.tsv files (tools/make_corpus.py writes them, fairseq's wav2vec_manifest.py too)")
    with open(manifest, encoding="utf-8") as f:
        root = f.readline().strip()
        n = 0
        for n, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            rel = fields[0]
            path = os.path.join(root, rel)
            if max_sample_size and len(fields) > 1 and fields[1].isdigit():
                require(int(fields[1]) <= max_sample_size, f"{manifest}:{n + 1}: {rel} has {fields[1]} samples, more than "
                        f"task.max_sample_size={max_sample_size}, and kd_audio never crops; raise task.max_sample_size or "
                        "drop the utterance from the manifest")
            require(os.path.isfile(path), f"{manifest}:{n + 1}: audio file {path} not found; fix the root "
                    "(first line) or the path, or regenerate the manifest")
            if check_audio:
                try:
                    sr = sf.info(path).samplerate
                except Exception as e:  # noqa: BLE001 - soundfile raises several types for bad files
                    raise KDConfigError(f"{manifest}:{n + 1}: cannot read {path} ({type(e).__name__}); "
                                        "re-encode it as PCM wav") from None
                require(sr == sample_rate, f"{manifest}:{n + 1}: {path} has {sr} Hz but task.sample_rate={sample_rate}; "
                        f"resample the audio (sox in.wav -r {sample_rate} out.wav) or set task.sample_rate")
    require(n > 0, f"{manifest}: no utterances listed")
    return n


@register_task("kd_audio", dataclass=KDAudioConfig)
class KDAudioTask(AudioFinetuningTask):
    """Audio (+ optional transcripts) for knowledge distillation; see the module docstring."""

    cfg: KDAudioConfig

    def __init__(self, cfg: KDAudioConfig):
        super().__init__(cfg)
        self.kd_model = None  # set by build_model; the criteria read the teacher and student from it

    @classmethod
    @one_line_errors()
    def setup_task(cls, cfg: KDAudioConfig, **kwargs):
        require(cfg.data is not None and os.path.isdir(str(cfg.data)), f"task.data={cfg.data}: not a directory; "
                "give the folder holding <split>.tsv manifests")
        if cfg.labels:
            path = os.path.join(cfg.data, f"dict.{cfg.labels}.txt")
            require(os.path.isfile(path), f"{path}: not found; task.labels={cfg.labels} needs it "
                    "(or set task.labels=null to distil unlabelled audio)")
        return cls(cfg)

    @one_line_errors()
    def load_dataset(self, split: str, task_cfg: Optional[KDAudioConfig] = None, **kwargs):
        task_cfg = task_cfg or self.cfg
        require(task_cfg.multi_corpus_keys is None, "task.multi_corpus_keys: not supported by kd_audio")
        manifest = os.path.join(self.cfg.data, f"{split}.tsv")
        n = check_manifest(manifest, task_cfg.sample_rate, task_cfg.check_audio, task_cfg.max_sample_size)
        if not task_cfg.labels:
            AudioPretrainingTask.load_dataset(self, split, task_cfg, **kwargs)
            return
        labels = os.path.join(self.cfg.data, f"{split}.{task_cfg.labels}")
        require(os.path.isfile(labels), f"{labels}: not found; write transcripts for {split} or set task.labels=null")
        with open(labels, encoding="utf-8") as f:
            n_labels = sum(1 for _ in f)
        require(n_labels == n, f"{labels}: {n_labels} lines but {manifest} lists {n} utterances; regenerate one of them")
        super().load_dataset(split, task_cfg, **kwargs)

    def build_model(self, model_cfg, from_checkpoint: bool = False):
        """Build the student; load its frozen teacher unless fairseq is reloading a checkpoint."""
        with one_line_errors():  # not a decorator: fairseq looks for from_checkpoint with getfullargspec
            model = super().build_model(model_cfg, from_checkpoint)
            if not from_checkpoint and hasattr(model, "load_teacher"):
                model.load_teacher()
                model.init_from_checkpoint()
        self.kd_model = model
        return model
