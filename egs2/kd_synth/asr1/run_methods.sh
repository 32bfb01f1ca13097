#!/usr/bin/env bash
# Compare the KD methods on the data and tokenizer of ./run.sh and the recipe's own ESPnet teacher (run
# ./run.sh --teacher_path "" --teacher_type espnet --stop_stage 5 first: LF-MMI needs a teacher on the student's
# token list, which the zoo's letter-CTC teacher is not): the same
# streaming student and training budget, trained (a) from scratch, (b) with layer-to-layer KD,
# (c) with auxiliary non-streaming branches + APC, (d) with DistillW2V2's hidden MSE + LF-MMI, and
# (e) two-stage: a non-streaming stage-1 student, then the streaming student initialised from it and
# distilled from it, (f) front-end KD (stage A: the Fbank front-end regresses the teacher's CNN output; stage B:
# layer KD from it). `--budget F.yaml` (first) is merged into every student config (e.g. fewer epochs);
# other options go to every ./run.sh call (e.g. --debug true). -> exp/RESULTS.md
set -euo pipefail
budget=""; if [ "${1:-}" = --budget ]; then budget=$2; shift 2; fi
opts=(--teacher_type espnet --teacher_path "" --teacher_dict "" "$@")
step() { ./run.sh "${opts[@]}" "$@"; }

step --stage 6 --stop_stage 8 --scratch false --student_tag _scratch --student_overrides "conf/method_scratch.yaml $budget"
step --stage 6 --stop_stage 8 --scratch false --student_tag _layerwise --student_overrides "$budget"
step --stage 6 --stop_stage 8 --scratch false --student_tag _aux_apc --student_overrides "conf/method_aux_apc.yaml $budget"
step --stage 6 --stop_stage 8 --scratch false --student_tag _lfmmi --student_overrides "conf/method_lfmmi.yaml $budget"
step --stage 6 --stop_stage 7 --scratch false --student_tag _stage1 --student_overrides "conf/method_lfmmi.yaml conf/method_stage1_shrink.yaml $budget"
s1=exp/asr_kd_student_stage1
python=python3; for ((i = 0; i < ${#opts[@]}; i++)); do [ "${opts[i]}" = --python ] && python=${opts[i + 1]}; done
"$python" -m espnet2.bin.pack asr --asr_train_config "$s1/export/config.yaml" --asr_model_file "$s1/export/model.pth" \
    --outpath "$s1/stage1.tmp.zip" && mv -f "$s1/stage1.tmp.zip" "$s1/stage1.zip"
step --stage 6 --stop_stage 8 --scratch false --student_tag _stage2 --student_overrides "conf/method_lfmmi.yaml $budget" \
    --teacher_overrides conf/teacher_stage1.yaml \
    --init_student "$s1/export/model.pth" --teacher_type espnet --teacher_dict "" --teacher_path "$s1/stage1.zip" --teacher_task asr_kd
# (f) front-end KD: stage A regresses the teacher's CNN output with the Fbank front-end, stage B is layer KD from it
step --stage 6 --stop_stage 7 --scratch false --student_tag _frontend_a --student_overrides "conf/method_frontend_kd.yaml $budget"
step --stage 6 --stop_stage 8 --scratch false --student_tag _frontend_b --student_overrides "$budget" \
    --init_student exp/asr_kd_student_frontend_a/export/model.pth
step --stage 9 --stop_stage 9
