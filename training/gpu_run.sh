#!/bin/bash
# Train on a borrowed GPU machine in one call: teachers first, then students distilled from them on
# the same augmented views (training.consistent on Keras' JAX backend); the students come back.
#
#   bash training/gpu_run.sh prepare     # here: pack the data and the wheels into the ignored .device/
#   bash training/gpu_run.sh             # there, as the device command, carrying .device; results in $OUT
#   python -m training.transport unpack-models <files_at> runs/gpu-students   # here, afterwards
#
# The device takes a working tree of at most 64 MiB, and the data alone is 59 MiB: make the call
# from a throwaway branch without the model files (git switch -c device-run && git rm -rq
# checkpoints models docs && git commit -qm tmp), then git switch main && git branch -D device-run.
#
# The GPU machine has JAX and PyTorch but not TensorFlow, Keras or Flask, and no network: the
# wheels travel. Each phase's training ends by its deadline (seconds after the start; TEACHER_END,
# STUDENT_END) less a reserve for saving and scoring, so the call ends inside the tool's limit
# whatever the GPU's speed. Four students, two JSON files, the log and teacher.npz are the 8 files
# the machine sends back: more students would be left there.
set -o pipefail
if [ "$1" = prepare ]; then
  mkdir -p .device/whl
  grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
  ${PYTHON:-python} -m training.transport pack-data "${DATA:-../shared/datasets/fer2013}" .device/faces.npz --val 800 || exit 1
  # the device's Python is 3.12; these are what training imports beyond what its image has
  ${PYTHON:-python} -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .device/whl \
    keras==3.15.1 namex optree flask flask-socketio python-socketio python-engineio bidict simple-websocket \
    wsproto itsdangerous blinker || exit 1
  du -sh .device
  exit 0
fi

start=$(date +%s)
left() { echo $(( $1 - ($(date +%s) - start) )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
LOG=$OUT/log.txt
nvidia-smi -L | tee -a "$LOG"
# a warm machine keeps /tmp from an earlier call: unpack-data and training.consistent refuse to write over it
rm -rf /tmp/fer2013 /tmp/students
python3 -m training.transport unpack-data "${PACK:-.device/faces.npz}" /tmp/fer2013 | tee -a "$LOG" || exit 1
quiet() { grep -v "^WARNING\|^W0000\|^I0000\|^Epoch" | tee -a "$LOG"; }

python3 -m training.consistent --data /tmp/fer2013 --out /tmp/teachers --widths ${TEACHER_WIDTHS:-96 96} \
  --time-budget "$(left "${TEACHER_END:-240}")" --reserve 45 --seed 100 2>&1 | quiet
cp /tmp/teachers/run.json "$OUT/teachers.json" || exit 1
python3 -m training.consistent --data /tmp/fer2013 --out /tmp/students --widths ${STUDENT_WIDTHS:-40 40 56 64} \
  --teachers /tmp/teachers/*.keras --teacher-weight "${TEACHER_WEIGHT:-0.7}" --mixup "${MIXUP:-0.3}" \
  --save-teacher --time-budget "$(left "${STUDENT_END:-480}")" --reserve 60 --seed 200 2>&1 | quiet
status=$?
cp /tmp/students/run.json "$OUT/students.json" && cp /tmp/students/teacher.npz "$OUT/"
python3 -m training.transport pack-models /tmp/students "$OUT" 2>&1 | tee -a "$LOG" || status=1
echo "total $(( $(date +%s) - start )) s" | tee -a "$LOG"
exit $status
