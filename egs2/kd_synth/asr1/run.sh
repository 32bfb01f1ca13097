#!/usr/bin/env bash
# Distil a non-streaming conformer CTC teacher into a 480 ms streaming student (ESPnet asr_kd task).
# Full run: ./run.sh   CI-size run: ./run.sh --debug true   Resume: ./run.sh --stage N
set -euo pipefail

./asr_kd.sh \
    --teacher_config conf/train_teacher.yaml \
    --student_config conf/train_student.yaml \
    --inference_config conf/decode.yaml \
    "$@"
