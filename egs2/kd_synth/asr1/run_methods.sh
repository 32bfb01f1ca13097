#!/usr/bin/env bash
# Compare the KD methods on the data, tokenizer and teacher of ./run.sh (stages 1-5 first): the same
# streaming student and training budget, trained (a) from scratch, (b) with layer-to-layer KD,
# (c) with auxiliary non-streaming branches + APC, (d) with DistillW2V2's hidden MSE + LF-MMI, and
# (e) two-stage: a non-streaming stage-1 student, then the streaming student initialised from it and
# distilled from it. `--budget F.yaml` (first) is merged into every student config (e.g. fewer epochs);
# other options go to every ./run.sh call (e.g. --debug true). -> exp/RESULTS.md
set -euo pipefail
budget=""; if [ "${1:-}" = --budget ]; then budget=$2; shift 2; fi
opts=("$@")
step() { ./run.sh "${opts[@]}" "$@"; }

step --stage 6 --stop_stage 8 --student_tag _scratch --student_overrides "conf/method_scratch.yaml $budget"
step --stage 6 --stop_stage 8 --student_tag _layerwise --student_overrides "$budget"
step --stage 6 --stop_stage 8 --student_tag _aux_apc --student_overrides "conf/method_aux_apc.yaml $budget"
step --stage 6 --stop_stage 8 --student_tag _lfmmi --student_overrides "conf/method_lfmmi.yaml $budget"
step --stage 6 --stop_stage 7 --student_tag _stage1 --student_overrides "conf/method_lfmmi.yaml conf/method_stage1_shrink.yaml $budget"
s1=exp/asr_kd_student_stage1
python=python3; for ((i = 0; i < ${#opts[@]}; i++)); do [ "${opts[i]}" = --python ] && python=${opts[i + 1]}; done
"$python" -m espnet2.bin.pack asr --asr_train_config "$s1/export/config.yaml" --asr_model_file "$s1/export/model.pth" \
    --outpath "$s1/stage1.tmp.zip" && mv -f "$s1/stage1.tmp.zip" "$s1/stage1.zip"
step --stage 6 --stop_stage 8 --student_tag _stage2 --student_overrides "conf/method_lfmmi.yaml $budget" \
    --init_student "$s1/export/model.pth" --teacher_path "$s1/stage1.zip" --teacher_task asr_kd
step --stage 9 --stop_stage 9
