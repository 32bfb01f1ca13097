#!/usr/bin/env bash
# Stage 1: synthetic corpus (espeak-ng + sox; test voices unseen in training) + FSDD test set (real speech).
# Writes ESPnet/Kaldi data dirs data/{train,valid,test_synth,test_fsdd}; --fsdd_train N adds N FSDD train
# recordings (evenly spaced over speakers and digits) to data/train, as the zoo teacher's labelled set has them.
set -euo pipefail
num_train=600; num_valid=60; num_test=100; text_source=wordnet; fsdd_dir=${KD_ROOT:-../../..}/../shared/data/fsdd; fsdd_max=0; fsdd_train=0
python=python3; nj=2
. ./local/parse_options.sh "$@"

root=$(cd "${KD_ROOT:-../../..}" && pwd)
corpus() { (cd "$root" && "$python" -m tools.make_corpus "$@"); }  # the repository's tools package
corpus synth --out "$PWD/data/local/synth" --seed 0 --num-train "$num_train" \
    --num-valid "$num_valid" --num-test "$num_test" --text-source "$text_source" --jobs "$nj"
for s in train valid; do mkdir -p data/$s && cp data/local/synth/kaldi/$s/{wav.scp,text,utt2spk,spk2utt} data/$s/; done
mkdir -p data/test_synth && cp data/local/synth/kaldi/test/{wav.scp,text,utt2spk,spk2utt} data/test_synth/
if [ -d "$fsdd_dir/recordings" ]; then
    opt=(); [ "$fsdd_max" -gt 0 ] && opt=(--max-per-split "$fsdd_max")
    corpus fsdd --fsdd-dir "$(cd "$fsdd_dir" && pwd)" --out "$PWD/data/local/fsdd" --jobs "$nj" "${opt[@]}"
    mkdir -p data/test_fsdd && cp data/local/fsdd/kaldi/test/{wav.scp,text,utt2spk,spk2utt} data/test_fsdd/
    if [ "$fsdd_train" -gt 0 ]; then
        src=data/local/fsdd/kaldi/train; n=$(wc -l < "$src/wav.scp"); step=$(( n / fsdd_train )); [ "$step" -ge 1 ] || step=1
        awk -v s="$step" -v m="$fsdd_train" '(NR - 1) % s == 0 && c++ < m { print $1 }' "$src/wav.scp" > data/local/fsdd_train.ids
        for f in wav.scp text utt2spk; do
            awk 'NR == FNR { keep[$1] = 1; next } ($1 in keep)' data/local/fsdd_train.ids "$src/$f" >> "data/train/$f"
            sort -o "data/train/$f" "data/train/$f"
        done
        awk '{ u[$2] = u[$2] " " $1 } END { for (s in u) print s u[s] }' data/train/utt2spk | sort > data/train/spk2utt
    fi
else
    echo "local/data.sh: $fsdd_dir/recordings not found; skipping the FSDD test set (pass --fsdd_dir)" >&2
fi
