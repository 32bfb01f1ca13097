#!/usr/bin/env bash
# Distil the zoo's HuBERT CTC teacher (zoo/hubert_mini_ctc, fairseq) into a 480 ms streaming student with the ESPnet
# asr_kd task, next to the same student trained from scratch; text from the zoo's closed 3,000-word vocabulary.
# Full run: ./run.sh   CI-size run: ./run.sh --debug true   Resume: ./run.sh --stage N
# Train the recipe's own ESPnet conformer teacher instead (stage 5): ./run.sh --teacher_path "" --teacher_type espnet
set -euo pipefail
zoo=$(cd "${KD_ROOT:-../../..}" && pwd)/zoo/hubert_mini_ctc

./asr_kd.sh \
    --teacher_type fairseq --teacher_path "$zoo/hubert_mini_ctc.pt" --teacher_dict "$zoo" \
    --scratch true --text_source wordnet-closed --fsdd_train 300 \
    --teacher_config conf/train_teacher.yaml \
    --student_config conf/train_student.yaml \
    --inference_config conf/decode.yaml \
    "$@"
