# The two device calls (one H200, jax 0.11.2) that produced cold_start.json and selfsup_cost_h200.jsonl, run
# in main's tree at the merge of zero + perf (carry: .whl with ml-collections, .gpu_data with
# pneumoniamnist.npz). Seeds 0-3 in the first call (8 runs at once), 4-11 in the second (12 at once).
# Then, here: python benchmarks/cold_start_zero.py --collect <dir with ti/tn/ri/rn of both calls> --out DIR
# selfsup.init defaulted to True when this ran (now False): to reproduce ti and ri add --config.selfsup.init=True.
# ti = al.initial=typiclust + SimCLR init, tn = typiclust without init, ri = random + SimCLR init,
# rn = random, no self-supervised stage. Later rounds: random over all rows, 20 labels per round.
set -u; export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl; export PYTHONPATH=/tmp/site:$PWD
mkdir -p ../shared/data && cp .gpu_data/pneumoniamnist.npz ../shared/data/
python3 -c "import jax;print(jax.__version__,jax.devices())"
timeout 90 python3 benchmarks/selfsup_cost.py --config configs/pneumonia.py --steps 300 2>&1 | tail -2 | tee $OUT/cost.jsonl
timeout 60 python3 benchmarks/selfsup_cost.py --config configs/pneumonia.py --steps 300 --batch 512 2>&1 | tail -2 | tee -a $OUT/cost.jsonl
run(){ a=$1; s=$2; shift 2; d=/tmp/cold/$a/s$s; mkdir -p $d; t=$SECONDS; python3 -m boostmis_jax.main --config configs/pneumonia.py --workdir $d --config.seed=$s --config.data.num_labels=0 --config.al.cycles=4 --config.al.selectors=random --config.al.candidates=all --config.al.budget=20 "$@" > $d/log.txt 2>&1; echo "$a $s rc=$? $((SECONDS-t))s"; }
export -f run
S=--config.selfsup.steps
{ for s in 0 1 2 3; do echo "ti $s --config.al.initial=typiclust $S=1000"; echo "tn $s --config.al.initial=typiclust $S=1000 --config.selfsup.init=False"; echo "ri $s --config.al.initial=random $S=1000"; echo "rn $s --config.al.initial=random $S=0"; done; } | timeout 300 xargs -P 8 -L 1 bash -c 'run "$@"' _
# second call: the same `run` with d=/tmp/cold2/..., seeds 4..11, xargs -P 12, timeout 310
