"""fairseq plugin: distil wav2vec 2.0 / HuBERT checkpoints into streaming students.

Use it as fairseq's user dir (``common.user_dir=<abs path>/fairseq_kd`` or ``--user-dir``). Importing
it registers (names prefixed ``kd_`` so they never clash with fairseq's):

- task ``kd_audio``: fairseq audio manifests (``<split>.tsv``) with optional transcripts
  (``task.labels=ltr``; ``null`` distils unlabelled audio), checked before training starts;
- model ``kd_streaming_student``: the core's streaming student (chunked conformer/transformer,
  log-Mel or waveform-CNN front-end, optional CTC head) plus the frozen teacher given by
  ``model.teacher_path`` (never saved in the student's checkpoint);
- criteria ``kd_layerwise`` (hidden-layer KD + CTC), ``kd_aux_apc`` (auxiliary full-context
  branches + APC) and ``kd_lfmmi`` (DistillW2V2: hidden MSE + modified LF-MMI).

fairseq imports a user dir's ``tasks/`` and ``models/`` only on its first import, so this package
imports all three sub-packages itself.

fairseq's fine-tuning tasks pickle their target ``Dictionary`` into every checkpoint (``task_state``),
which torch >= 2.6 refuses to unpickle by default (``weights_only=True``). Importing the plugin adds
that one fairseq data class to torch's allow-list (``torch.serialization.add_safe_globals``), so
stock ``checkpoint_utils.load_model_ensemble_and_task`` reads the checkpoints fairseq writes here.
"""
import torch
from fairseq.data.dictionary import Dictionary

from . import criterions, models, tasks  # noqa: F401  (registrations)

torch.serialization.add_safe_globals([Dictionary])
