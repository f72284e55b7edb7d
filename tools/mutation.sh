#!/usr/bin/env bash
# Mutation testing (mutmut 3, `pip install -e .[mutation]`) of one pure, fast module against the
# fast test files that cover it; prints the killed share and the surviving mutants.
#
#   tools/mutation.sh boxes            # one module: boxes anchors optim losses voc_metric
#   tools/mutation.sh all              #   targets postprocess assign, or all of them in turn
#   mutmut show mgdet.ops.boxes.x_decode__mutmut_22   # (in the work folder printed) a survivor's diff
#
# Each module runs in its own copy of the working tree under ${MUTATION_DIR:-/tmp/mgdet-mutation}
# (mutmut writes a mutants/ folder and caches results there: delete the folder for a fresh run).
# Runs at the lowest priority (nice 19) on ${MUTATION_JOBS:-1} worker(s): leave it in the background
# on a shared machine, one module at a time, e.g. `tools/mutation.sh losses > losses.txt 2>&1 &`.
#
# Harness settings (docs/testing.md):
# - every tf.function runs eagerly (MGDET_MUTATION, tests/conftest.py): mutmut forks each mutant
#   from a process that already ran TF, and a graph function run in a forked child waits forever
#   on the parent's inter-op threads (the child has none) -- every mutant would "time out";
# - a mutant's tests get (their clean time + ${MUTATION_TIMEOUT_S:-10} s) x ${MUTATION_TIMEOUT_X:-4} of
#   wall time before they count as a timeout (counted as killed: a hang); the constant is large
#   because a forked run on a busy machine can stall for seconds, and a short limit then passes
#   surviving mutants off as timeouts;
# - address space capped at ${MUTATION_MEM_GB:-8} GB: a mutant that builds a huge tensor (an anchor
#   grid of 10^7 boxes) fails at once with a MemoryError instead of taking the machine's memory.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BASE="${MUTATION_DIR:-/tmp/mgdet-mutation}"

# module -> the mutmut name pattern and the test files (or test ids) that cover it
tests_for() {
  case "$1" in
    boxes|anchors) echo "tests/ops/test_boxes_anchors.py" ;;
    optim)         echo "tests/training/test_optim.py" ;;
    losses)        echo "tests/test_losses.py" \
                     "tests/assign/test_assign_atss_tal.py::test_quality_focal_matches_formula" \
                     "tests/assign/test_assign_atss_tal.py::test_detection_loss_with_quality_focal_matches_reference" ;;
    voc_metric)    echo "tests/evaluation/test_voc_metric.py tests/assign/test_difficult.py" ;;
    targets)       # the conversion tests (the ones that train a model take minutes a mutant)
                   t=tests/models/test_keras_hub_inputs.py
                   echo "$t::test_every_box_format_converts_to_relative_xyxy" \
                        "$t::test_classes_key_float_labels_and_an_explicit_valid_mask" \
                        "$t::test_bad_targets_name_the_expected_keys" \
                        "$t::test_unknown_box_format_is_refused" ;;
    postprocess)   echo "tests/ops/test_postprocess.py" ;;
    assign)        echo "tests/assign/test_assign.py tests/assign/test_assign_atss_tal.py" ;;
    *) echo "unknown module '$1': use boxes, anchors, optim, losses, voc_metric, targets," \
            "postprocess, assign or all" >&2; exit 2 ;;
  esac
}

# module -> its dotted name under mgdet (the package of its stage)
dotted_for() {
  case "$1" in
    boxes|anchors|targets|postprocess) echo "ops.$1" ;;
    optim)      echo "training.optim" ;;
    voc_metric) echo "evaluation.voc_metric" ;;
    *)          echo "$1" ;;
  esac
}

run_module() {
  local module="$1" work="$BASE/$1" files path dotted
  files="$(tests_for "$module")"
  dotted="$(dotted_for "$module")"
  path="mgdet/${dotted//.//}.py"
  [ "$module" = assign ] && path="mgdet/assign/*"
  mkdir -p "$work"
  (cd "$ROOT" && tar cf - --exclude=__pycache__ mgdet tests configs cli.py setup.cfg \
     pyproject.toml) | (cd "$work" && tar xf -)
  # this module only, its own tests only (replaces the [mutmut] section of the copy)
  python - "$work/setup.cfg" "$path" "${MUTATION_TIMEOUT_X:-4}" "${MUTATION_TIMEOUT_S:-10}" \
    $files <<'EOF'
import configparser, sys
cfg_path, path, timeout_x, timeout_s, tests = sys.argv[1:5] + [sys.argv[5:]]
cfg = configparser.ConfigParser()
cfg.read(cfg_path)
cfg["mutmut"]["only_mutate"] = "\n" + path
cfg["mutmut"]["pytest_add_cli_args_test_selection"] = "\n" + "\n".join(tests)
cfg["mutmut"]["timeout_multiplier"] = timeout_x
cfg["mutmut"]["timeout_constant"] = timeout_s
with open(cfg_path, "w") as f:
    cfg.write(f)
EOF
  echo "== mgdet.$dotted ($files) in $work"
  (cd "$work" && ulimit -v $(( ${MUTATION_MEM_GB:-8} * 1024 * 1024 )) \
     && MGDET_MUTATION=1 nice -n 19 mutmut run --max-children "${MUTATION_JOBS:-1}" \
        "mgdet.$dotted.*" > run.log 2>&1) \
    || { echo "mutmut failed: see $work/run.log" >&2; return 1; }
  (cd "$work" && mutmut results --all true) | python -c '
import collections, sys
module = sys.argv[1]
rows = [l.strip().rsplit(": ", 1) for l in sys.stdin if ": " in l]
rows = [(n, s) for n, s in rows if n.startswith("mgdet." + module + ".")]
count = collections.Counter(s for _, s in rows)
detected = ("killed", "timeout", "segfault")  # a crashed or hung test run detects it too
killed = sum(count[s] for s in detected)
total = len(rows)
print(f"mgdet.{module}: {killed}/{total} killed ({100 * killed / max(total, 1):.1f}%): "
      + ", ".join(f"{k} {v}" for k, v in sorted(count.items())))
for name, status in rows:  # timeouts listed too: a hang in every run would pass for kills
    if status != "killed":
        print(f"  {status}: {name}")
' "$dotted"
}

if [ "${1:-}" = all ]; then
  for m in boxes anchors optim losses voc_metric targets postprocess assign; do run_module "$m"; done
else
  run_module "${1:?usage: tools/mutation.sh MODULE|all}"
fi
