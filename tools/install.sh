#!/usr/bin/env bash
# Idempotent installer: system packages, a pinned .venv, and this project in editable mode.
# Versions follow shared/INSTALL_NOTES.md (measured to co-install on Python 3.11, CPU only).
# A second run with everything present only checks a stamp and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
STAMP=$VENV/.kd_install_stamp
WANT=$(cat tools/install.sh setup.py pyproject.toml pep517/kd_backend.py espnet_kd/espnet_kd_aliases.pth | sha256sum | cut -c1-16)

log() { echo "[install] $*" >&2; }

# 1. Debian packages (espeak-ng + sox synthesise the corpus; libsndfile backs soundfile; sctk scores recipes).
need_apt=()
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v sox >/dev/null || need_apt+=(sox)
command -v sctk >/dev/null || need_apt+=(sctk)  # ESPnet scoring (sclite via `sctk sclite`)
ldconfig -p 2>/dev/null | grep -q libsndfile || need_apt+=(libsndfile1)
[ -f /usr/share/wordnet/data.verb ] || need_apt+=(wordnet-base)  # licence-clean benchmark sentences
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VENV/bin/python" -c "import kd_core, espnet2, fairseq, torchaudio, sherpa_onnx" 2>/dev/null; then
  log "up to date ($VENV)"
  exit 0
fi

# 2. Virtual environment with pinned, co-installable versions.
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install -U "pip<25" "setuptools<80" wheel
log "torch 2.9.1 + torchaudio 2.9.1 (large download on first run)"
"${PIP[@]}" install torch==2.9.1 torchaudio==2.9.1
log "espnet 202511 + espnet_model_zoo 0.1.7 + tools"
"${PIP[@]}" install torch==2.9.1 espnet==202511 espnet-model-zoo==0.1.7 sentencepiece jiwer pyyaml \
  pytest pytest-xdist soundfile matplotlib cython tqdm resampy tensorboard transformers==5.24.0 \
  onnx==1.23.2 onnxruntime==1.32.0 sherpa-onnx==2.0.1 "inflect<7"
# inflect<7: 7.x (pulled in by espnet's g2p_en) instruments its functions with typeguard at import, ~5 s of every
# ESPnet process's ~30 s start-up on a 2-core machine (python -X importtime); 6.2 has the same API, no instrumenting.
if ! "$VENV/bin/python" -c "import fairseq.libbase" 2>/dev/null; then
  log "fairseq-fixed 0.12.3.1, compiled against the installed torch (no build isolation, no cache)"
  "${PIP[@]}" install hydra-core==1.3.2 omegaconf==2.3.0 bitarray sacrebleu regex cffi scikit-learn
  "${PIP[@]}" install --no-build-isolation --no-cache-dir --no-deps fairseq-fixed==0.12.3.1
fi
# ESPnet's import of g2p_en downloads NLTK data when absent (no network here). Empty placeholders at
# $NLTK_DATA (the Makefile and tests point it at .venv/nltk_data) stop that; our recipes never use g2p.
"$VENV/bin/python" - "$VENV/nltk_data" <<'PY'
import os, sys, zipfile
for rel in ("taggers/averaged_perceptron_tagger_eng.zip", "corpora/cmudict.zip"):
    path = os.path.join(sys.argv[1], rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.exists(path):
        zipfile.ZipFile(path, "w").close()
PY
log "this project (editable, PEP 660 through pyproject.toml)"
"${PIP[@]}" install --no-deps --no-build-isolation -e "$ROOT"
"$VENV/bin/python" -c "import kd_core, espnet2, fairseq, torchaudio, onnxruntime, sherpa_onnx; print('torch', __import__('torch').__version__)"
echo "$WANT" > "$STAMP"
log "done"
