#!/usr/bin/env bash
# Hard targets / noisy-student self-training (Hwang et al. 2022; Xie et al. 2020) in the recipe. Run after ./run.sh.
# 1. the teacher labels audio that has no transcripts (default data/unlabelled: the FSDD train recordings outside
#    data/train) with its 1-best (python -m espnet_kd.pseudo_label; --min_confidence drops unsure ones);
# 2. data/train + those pseudo-labels = data/train_pl<round>: dumped, its shapes collected (stages 2 and 4);
# 3. the same streaming student trains on it with its ordinary loss + SpecAugment and no teacher
#    (conf/method_noisy_student.yaml), is exported, decoded and scored (stages 6-9: exp/asr_kd_student_noisy<round>).
# The next round is one more run with that student as the teacher (packed in exp/asr_kd_student_noisy<round>/packed.zip):
#   ./run_noisy_student.sh --round 2 --label_teacher_type espnet --label_teacher_conf task=asr_kd \
#       --label_teacher_path exp/asr_kd_student_noisy1/packed.zip
# Options of this script come first; the rest go to every ./run.sh call (e.g. --debug true --python python).
set -euo pipefail
round=1; unlabelled=data/unlabelled; min_confidence=0.0
zoo=$(cd "${KD_ROOT:-../../..}" && pwd)/zoo/hubert_mini_ctc
label_teacher_type=fairseq; label_teacher_path=$zoo/hubert_mini_ctc.pt; label_teacher_conf=""; label_dict=$zoo
while [ $# -gt 0 ]; do
    case "$1" in
        --round|--unlabelled|--min_confidence|--label_teacher_type|--label_teacher_path|--label_teacher_conf|--label_dict)
            name=${1#--}; printf -v "$name" '%s' "$2"; shift 2 ;;
        *) break ;;
    esac
done
python=python3; for ((i = 1; i <= $#; i++)); do [ "${!i}" = --python ] && { j=$((i + 1)); python=${!j}; }; done
log() { echo "$(date '+%F %T') (run_noisy_student.sh) $*" >&2; }

if [ "$unlabelled" = data/unlabelled ] && [ ! -s data/unlabelled/wav.scp ]; then  # FSDD train audio not in data/train
    src=data/local/fsdd/kaldi/train
    [ -s "$src/wav.scp" ] || { echo "run_noisy_student.sh: $src/wav.scp not found; run ./run.sh first or pass --unlabelled DIR" >&2; exit 1; }
    mkdir -p data/unlabelled
    awk 'NR == FNR { seen[$1] = 1; next } !($1 in seen)' data/train/wav.scp "$src/wav.scp" > data/unlabelled/wav.scp.tmp
    mv data/unlabelled/wav.scp.tmp data/unlabelled/wav.scp
fi
pl=data/train_pl$round
conf=(); [ -n "$label_teacher_conf" ] && conf=(--teacher_conf "$label_teacher_conf")
[ "$label_teacher_type" = espnet ] && conf+=(--teacher_conf "cachedir=$PWD/exp/teacher_cache")
dict=(); [ "$label_teacher_type" = fairseq ] && dict=(--dict_dir "$label_dict")
log "pseudo-labels: $label_teacher_type $label_teacher_path -> ${pl}_unlab"
"$python" -m espnet_kd.pseudo_label --teacher_type "$label_teacher_type" --teacher_path "$label_teacher_path" \
    "${conf[@]}" "${dict[@]}" --data_dir "$unlabelled" --out_dir "${pl}_unlab" --min_confidence "$min_confidence"
mkdir -p "$pl"
for f in wav.scp text utt2spk; do sort data/train/$f "${pl}_unlab/$f" > "$pl/$f.tmp" && mv "$pl/$f.tmp" "$pl/$f"; done
awk '{ u[$2] = u[$2] " " $1 } END { for (s in u) print s u[s] }' "$pl/utt2spk" | sort > "$pl/spk2utt"
log "$(wc -l < data/train/text) labelled + $(wc -l < "${pl}_unlab/text") pseudo-labelled utterances -> $pl"

./run.sh "$@" --train_set "train_pl$round" --stage 2 --stop_stage 2
./run.sh "$@" --train_set "train_pl$round" --stage 4 --stop_stage 4
./run.sh "$@" --train_set "train_pl$round" --stage 6 --stop_stage 9 --scratch false --student_tag "_noisy$round" \
    --student_overrides conf/method_noisy_student.yaml
s=exp/asr_kd_student_noisy$round
"$python" -m espnet2.bin.pack asr --asr_train_config "$s/export/config.yaml" --asr_model_file "$s/export/model.pth" \
    --outpath "$s/packed.tmp.zip" && mv -f "$s/packed.tmp.zip" "$s/packed.zip"
log "done: $s (next round's teacher: $s/packed.zip with --label_teacher_conf task=asr_kd)"
