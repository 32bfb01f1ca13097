"""``python -m espnet_kd.pseudo_label``: :mod:`kd_core.pseudo_label` (hard targets: a teacher's 1-best of unlabelled
audio as a Kaldi data dir) with this adapter's ``--teacher_conf`` keys, so an ESPnet model trained with ``asr_kd``
(``--teacher_conf task=asr_kd``: a transducer, a previous noisy-student round) can label audio."""
from kd_core.pseudo_label import main as _main

from .task import loader_conf


def main(argv=None) -> None:
    _main(argv, loader_conf=loader_conf)


if __name__ == "__main__":
    main()
