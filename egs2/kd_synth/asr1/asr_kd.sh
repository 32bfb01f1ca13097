#!/usr/bin/env bash
# Stage-gated KD recipe in ESPnet's egs2 layout (conf/ local/ data/ dump/ exp/). Each stage runs
# the same commands ESPnet's asr.sh runs for `--asr_task asr_kd` (espnet2.bin.asr_kd_train with
# --collect_stats, training, espnet2.bin.asr_kd_inference), plus teacher training and scoring.
#   1 data   2 dump/raw   3 sentencepiece tokenizer   4 collect stats   5 teacher (train + pack,
#   skipped with --teacher_path)   6 KD training of the streaming student (+ the same student from scratch
#   with --scratch true)   7 export student   8 decoding (students offline + chunk-by-chunk streaming; the
#   teacher: ESPnet's asr_inference, or greedy CTC through load_teacher for a fairseq zoo teacher; a decoding
#   finished after its model was written is kept, so re-runs and run_methods.sh decode the teacher once)
#   9 scoring (jiwer WER, parameters, latency and RTF -> exp/RESULTS.md)
set -euo pipefail

stage=1; stop_stage=9; debug=false; python=python3; nj=2
teacher_config=conf/train_teacher.yaml; student_config=conf/train_student.yaml; inference_config=conf/decode.yaml
teacher_type=espnet; teacher_path=""      # default: the teacher trained in stage 5
teacher_dict=""        # fairseq letter-CTC teacher: folder with its dict.ltr.txt (decodes the teacher in stage 8)
scratch=false          # stage 6 also trains the same student without a teacher (conf/method_scratch.yaml)
teacher_overrides=""   # student-config overrides that fit the teacher (its layer map), before --debug's sizes;
                       # default with the recipe's own teacher: conf/teacher_espnet.yaml
teacher_cache=true     # teacher targets computed once (first epoch) into exp/teacher_targets, then read back
student_overrides=""   # e.g. "conf/method_aux_apc.yaml": merged on top of the student config
student_tag=""         # experiment name suffix: exp/asr_kd_student${student_tag}
init_student=""        # two-stage: initialise the student from this model file (stage-1 student)
teacher_task=asr       # asr_kd when the teacher is a (packed) student trained with asr_kd (two-stage)
nbpe=64; fs=16k
train_set=train; valid_set=valid; test_sets="test_synth test_fsdd"
num_train=600; num_valid=60; num_test=100; fsdd_max=0; fsdd_train=0; text_source=wordnet
. ./local/parse_options.sh "$@"

log() { echo "$(date '+%F %T') (asr_kd.sh) $*" >&2; }
run() { log "$*"; "$@"; }
if [ "$debug" = true ]; then  # CI size: a few minutes end to end
    num_train=48; num_valid=8; num_test=8; fsdd_max=8; fsdd_train=4; text_source=grammar; nbpe=30
    cfg() { local base=$1; echo "${base%.yaml}_debug.yaml"; }
else
    cfg() { :; }
fi
merged() {  # merged base.yaml out.yaml [early ... --] [late ...]: base + early + (--debug true) the CI-size override + late
    local base=$1 out=$2 over early=(); shift 2; over=$(cfg "$base"); mkdir -p "$(dirname "$out")"
    if [[ " $* " == *" -- "* ]]; then while [ "$1" != -- ]; do early+=("$1"); shift; done; shift; fi
    "$python" local/merge_yaml.py "$base" "${early[@]}" ${over:+"$over"} "$@" > "$out"
}
token_dir=data/token_list/bpe_unigram${nbpe}
stats_dir=exp/asr_stats_raw_bpe${nbpe}$([ "$train_set" = train ] || echo "_$train_set")  # another training set: its own shapes
teacher_dir=exp/asr_teacher
student_dir=exp/asr_kd_student${student_tag}
student_dirs=("$student_dir"); [ "$scratch" = true ] && student_dirs+=("${student_dir}_scratch")
root=$(cd "${KD_ROOT:-../../..}" && pwd)  # the repository (its tools package)
timed() {  # timed OUT_DIR MODEL cmd...: decode (skipped when OUT_DIR's decoding is newer than MODEL), then write
            # the wall time to OUT_DIR/decode_seconds (the RTF column; written last, so it marks a finished decoding)
    local out=$1 model=$2 t0; shift 2
    if [ -f "$out/decode_seconds" ] && [ "$out/decode_seconds" -nt "$model" ]; then log "up to date: $out"; return; fi
    t0=$(date +%s.%N); run "$@"; mkdir -p "$out"
    awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f\n", b - a }' > "$out/decode_seconds.tmp"
    mv -f "$out/decode_seconds.tmp" "$out/decode_seconds"
}
common=(--use_preprocessor true --token_type bpe --bpemodel "$token_dir/bpe.model" --token_list "$token_dir/tokens.txt"
        --non_linguistic_symbols none --cleaner none --g2p none --frontend_conf "fs=$fs" --ngpu 0)
data_opts=(--train_data_path_and_name_and_type "dump/raw/$train_set/wav.scp,speech,sound"
           --train_data_path_and_name_and_type "dump/raw/$train_set/text,text,text"
           --valid_data_path_and_name_and_type "dump/raw/$valid_set/wav.scp,speech,sound"
           --valid_data_path_and_name_and_type "dump/raw/$valid_set/text,text,text")
shape_opts=(--train_shape_file "$stats_dir/train/speech_shape" --train_shape_file "$stats_dir/train/text_shape.bpe"
            --valid_shape_file "$stats_dir/valid/speech_shape" --valid_shape_file "$stats_dir/valid/text_shape.bpe"
            --fold_length 80000 --fold_length 150)

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    log "Stage 1: data"
    run ./local/data.sh --num_train "$num_train" --num_valid "$num_valid" --num_test "$num_test" \
        --fsdd_max "$fsdd_max" --fsdd_train "$fsdd_train" --text_source "$text_source" --python "$python" --nj "$nj"
fi
test_sets_present=""; for t in $test_sets; do [ -d "data/$t" ] && test_sets_present+=" $t"; done

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    log "Stage 2: dump/raw (16 kHz wav, used as is)"
    for s in "$train_set" "$valid_set" $test_sets_present; do
        mkdir -p "dump/raw/$s" && cp data/$s/{wav.scp,text,utt2spk,spk2utt} "dump/raw/$s/" && echo raw > "dump/raw/$s/feats_type"
    done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    log "Stage 3: sentencepiece (unigram, $nbpe) + token list via espnet2.bin.tokenize_text"
    mkdir -p "$token_dir"
    cut -d' ' -f2- "dump/raw/$train_set/text" > "$token_dir/train.txt"
    run "$python" -c "import sys, sentencepiece as spm; spm.SentencePieceTrainer.train(' '.join(sys.argv[1:]))" \
        --input="$token_dir/train.txt" --vocab_size="$nbpe" --model_type=unigram --model_prefix="$token_dir/bpe" \
        --character_coverage=1.0 --input_sentence_size=100000000 --minloglevel=2
    run "$python" -m espnet2.bin.tokenize_text --token_type bpe --bpemodel "$token_dir/bpe.model" \
        --input "$token_dir/train.txt" --output "$token_dir/tokens.txt" --field 1- --cleaner none --g2p none \
        --write_vocabulary true --add_symbol "<blank>:0" --add_symbol "<unk>:1" --add_symbol "<sos/eos>:-1"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
    log "Stage 4: collect stats (espnet2.bin.asr_kd_train --collect_stats true)"
    merged "$student_config" "$stats_dir/train_config.yaml"
    for s in "$train_set" "$valid_set"; do mkdir -p "$stats_dir/logdir" && cp "dump/raw/$s/wav.scp" "$stats_dir/logdir/$s.1.scp"; done
    run "$python" -m espnet2.bin.asr_kd_train --collect_stats true "${common[@]}" --config "$stats_dir/train_config.yaml" \
        "${data_opts[@]}" --train_shape_file "$stats_dir/logdir/$train_set.1.scp" --valid_shape_file "$stats_dir/logdir/$valid_set.1.scp" \
        --output_dir "$stats_dir/logdir/stats.1"
    run "$python" -m espnet2.bin.aggregate_stats_dirs --input_dir "$stats_dir/logdir/stats.1" --output_dir "$stats_dir"
    for s in train valid; do mv -f "$stats_dir/$s/text_shape" "$stats_dir/$s/text_shape.bpe"; done
fi

if [ -z "$teacher_path" ]; then  # the recipe's own teacher (6 blocks): the layer map of conf/teacher_espnet.yaml
    teacher_path=$teacher_dir/teacher.zip; teacher_type=espnet; teacher_dict=""
    teacher_overrides=${teacher_overrides:-conf/teacher_espnet.yaml}
fi
if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ] && [ "$teacher_path" = "$teacher_dir/teacher.zip" ]; then
    log "Stage 5: teacher (stock espnet2.bin.asr_train, non-streaming conformer CTC) + espnet2.bin.pack"
    merged "$teacher_config" "$teacher_dir/train_config.yaml"
    run "$python" -m espnet2.bin.asr_train "${common[@]}" --config "$teacher_dir/train_config.yaml" "${data_opts[@]}" "${shape_opts[@]}" \
        --resume true --output_dir "$teacher_dir"
    run "$python" -m espnet2.bin.pack asr --asr_train_config "$teacher_dir/config.yaml" \
        --asr_model_file "$teacher_dir/valid.loss.ave.pth" --option "$token_dir/bpe.model" --outpath "$teacher_dir/teacher.tmp.zip"
    mv -f "$teacher_dir/teacher.tmp.zip" "$teacher_dir/teacher.zip"
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
    log "Stage 6: KD training of the streaming student (espnet2.bin.asr_kd_train, teacher: $teacher_type $teacher_path)"
    tconf=(); [ "$teacher_type" = espnet ] && tconf=(--teacher_conf "cachedir=$PWD/exp/teacher_cache" --teacher_conf "task=$teacher_task")
    [ "$teacher_type" = fairseq ] && [ -n "$teacher_dict" ] && tconf=(--teacher_conf "data_dir=$teacher_dict")
    [ "$teacher_cache" = true ] && tconf+=(--teacher_cache_dir "$PWD/exp/teacher_targets")
    init=(); [ -n "$init_student" ] && init=(--init_param "$init_student:encoder:encoder" "$init_student:frontend:frontend" "$init_student:ctc:ctc")
    for dir in "${student_dirs[@]}"; do
        over="$student_overrides"; [ "$dir" != "$student_dir" ] && over="$over conf/method_scratch.yaml"
        # shellcheck disable=SC2086
        merged "$student_config" "$dir/train_config.yaml" $teacher_overrides -- $over
        run "$python" -m espnet2.bin.asr_kd_train "${init[@]}" "${common[@]}" --config "$dir/train_config.yaml" "${data_opts[@]}" "${shape_opts[@]}" \
            --teacher_type "$teacher_type" --teacher_path "$teacher_path" "${tconf[@]}" \
            --resume true --output_dir "$dir"
    done
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
    log "Stage 7: export the student as a plain ESPnet model"
    run "$python" -m espnet_kd.export --config "$student_dir/config.yaml" --model_file "$student_dir/valid.loss.ave.pth" \
        --out_dir "$student_dir/export"
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
    log "Stage 8: decoding"
    for t in $test_sets_present; do
        data=(--data_path_and_name_and_type "dump/raw/$t/wav.scp,speech,sound")
        if [ "$teacher_path" = "$teacher_dir/teacher.zip" ] && [ -f "$teacher_dir/valid.loss.ave.pth" ]; then
            timed "$teacher_dir/decode_offline/$t" "$teacher_dir/valid.loss.ave.pth" "$python" -m espnet2.bin.asr_inference "${data[@]}" --config "$inference_config" --ngpu 0 \
                --asr_train_config "$teacher_dir/config.yaml" --asr_model_file "$teacher_dir/valid.loss.ave.pth" \
                --output_dir "$teacher_dir/decode_offline/$t"
        elif [ "$teacher_type" = fairseq ] && [ -n "$teacher_dict" ]; then  # a zoo teacher: greedy CTC, load_teacher
            out=$PWD/exp/teacher_$(basename "${teacher_path%.pt}")/decode_offline/$t
            timed "$out" "$teacher_path" env -C "$root" "$python" -m tools.zoo_eval \
                --checkpoint "$teacher_path" --dict_dir "$teacher_dict" --wav_scp "$PWD/dump/raw/$t/wav.scp" --out_dir "$out"
        fi
        for dir in "${student_dirs[@]}"; do
            timed "$dir/decode_offline/$t" "$dir/valid.loss.ave.pth" "$python" -m espnet2.bin.asr_kd_inference "${data[@]}" --config "$inference_config" --ngpu 0 \
                --asr_train_config "$dir/config.yaml" --asr_model_file "$dir/valid.loss.ave.pth" \
                --output_dir "$dir/decode_offline/$t"
            timed "$dir/decode_streaming/$t" "$dir/valid.loss.ave.pth" "$python" -m espnet2.bin.asr_kd_inference "${data[@]}" --config "$inference_config" --ngpu 0 \
                --asr_train_config "$dir/config.yaml" --asr_model_file "$dir/valid.loss.ave.pth" \
                --kd_chunk_streaming true --output_dir "$dir/decode_streaming/$t"
        done
    done
fi

if [ "$stage" -le 9 ] && [ "$stop_stage" -ge 9 ]; then
    log "Stage 9: scoring"
    # shellcheck disable=SC2046
    run "$python" local/score.py --ref_dir dump/raw --out exp/RESULTS.md $(ls -d exp/{teacher,asr}_*/decode_*/* 2>/dev/null)
fi
log "done"
