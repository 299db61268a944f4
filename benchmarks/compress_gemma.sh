#!/usr/bin/env bash
# The compression benchmark of BENCHMARKS.md ("Compress"): Gemma 3 270M fine-tuned by Seedbed on single-step
# arithmetic, then quantized (int8, GGUF q8_0 and q4_k_m) and distilled into a narrow student, and every model
# compared on the same 100 held-out calculations. Needs the llama.cpp extra:
#   CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" pip install -e ".[llamacpp]"
#   bash benchmarks/compress_gemma.sh            # OUT=runs/compress by default; steps already done are skipped
set -euo pipefail
OUT=${OUT:-runs/compress}
DATA=benchmarks/data
mkdir -p "$OUT"
step() { echo "== $1 ($(date +%T))"; }
timed() { /usr/bin/time -f "%e s wall, %M KiB peak RSS" "$@"; }

step "teacher: LoRA fine-tune of Gemma 3 270M on 600 calculations"
[ -f "$OUT/tuned/config.json" ] || timed seedbed finetune --base gemma-3-270m --data $DATA/arith_train.jsonl \
    --method lora --epochs 2 --batch-size 8 --lr 5e-4 --max-length 64 --val-fraction 0.05 --eval-steps 25 \
    --save-steps 25 --logging-steps 5 --out "$OUT/tuned"

for method in int8 q8_0 q4_k_m; do
    step "quantize $method"
    [ -f "$OUT/$method/quantize.json" ] || timed seedbed quantize --model "$OUT/tuned" --method $method --out "$OUT/$method"
done

step "distill: narrow-half student, logit distillation from the tuned teacher"
[ -f "$OUT/student/config.json" ] || timed seedbed distill --teacher "$OUT/tuned" --student narrow-half \
    --data $DATA/arith_train.jsonl --mode logit --epochs ${DISTILL_EPOCHS:-4} --batch-size 8 --lr 1e-3 \
    --max-length 64 --eval-steps 25 --save-steps 50 --out "$OUT/student"

[ "${SKIP_COMPARE:-0}" = 1 ] && exit 0  # e.g. to run the comparison later, on an otherwise idle machine
step "compare"
timed seedbed compare base=gemma-3-270m tuned="$OUT/tuned" int8="$OUT/int8" q8_0="$OUT/q8_0" q4_k_m="$OUT/q4_k_m" \
    student="$OUT/student" --data $DATA/arith_heldout.jsonl --limit 100 --max-new-tokens 12 --threads 2 \
    --prompt-tokens 128 --decode-tokens 64 --repeats 3 --out "$OUT/compare"
