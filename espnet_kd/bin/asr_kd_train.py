#!/usr/bin/env python3
"""ASR training with knowledge distillation: ``asr_train``'s CLI plus teacher/KD options.

    % python -m espnet2.bin.asr_kd_train --print_config > conf/train_asr_kd.yaml
    % python -m espnet2.bin.asr_kd_train --config conf/train_asr_kd.yaml ...
"""
import sys

from kd_core.errors import KDConfigError


def get_parser():
    from espnet_kd.task import ASRKDTask

    return ASRKDTask.get_parser()


def main(cmd=None):
    from espnet_kd.task import ASRKDTask

    try:
        ASRKDTask.main(cmd=cmd)
    except KDConfigError as e:  # a one-line message, before training starts
        sys.exit(f"asr_kd_train: error: {e}")


if __name__ == "__main__":
    main()
