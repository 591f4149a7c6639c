#!/usr/bin/env bash
# Builds the image, starts it, waits for /health/ready, POSTs a real /estimate on a Gaussian sample with known
# MI, checks the answer, and removes the container. Uses docker if its engine runs, else podman.
#   scripts/container_smoke.sh                      # docker (or podman) with the Dockerfile's defaults
#   PORT=8765 ENGINE=podman scripts/container_smoke.sh
# Extra flags: BUILD_FLAGS / RUN_FLAGS. On the podman-only dev machines (see ../shared/container/README.md):
#   LOCAL_PODMAN=1 scripts/container_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${ENGINE:-}" ]]; then  # a docker CLI without a running engine does not count
  if [[ "${LOCAL_PODMAN:-0}" != 1 ]] && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
fi
IMAGE=${IMAGE:-mist-server:smoke}
NAME=${NAME:-mist-smoke-$$}
PORT=${PORT:-8765}
BUILD_FLAGS=${BUILD_FLAGS:-}
RUN_FLAGS=${RUN_FLAGS:-}
if [[ "${LOCAL_PODMAN:-0}" == 1 ]]; then
  common="--runtime runc --network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
  BUILD_FLAGS="--format docker $BUILD_FLAGS"  # keep HEALTHCHECK (the OCI format drops it)
  BUILD_FLAGS="$common -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro
    -v /opt/wheels:/opt/wheels:ro --build-arg BASE_IMAGE=localhost/python:3.11-bookworm-local
    --build-arg TORCH_INDEX_URL= --build-arg PIP_FIND_LINKS=/opt/wheels $BUILD_FLAGS"
  RUN_FLAGS="$common -e MIST_PORT=$PORT $RUN_FLAGS"
else
  RUN_FLAGS="-p 127.0.0.1:$PORT:8000 $RUN_FLAGS"
fi

echo "== build ($ENGINE)"
start=$(date +%s)
# shellcheck disable=SC2086
$ENGINE build $BUILD_FLAGS -t "$IMAGE" .
echo "built $IMAGE in $(( $(date +%s) - start )) s; size: $($ENGINE image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"

cleanup() { $ENGINE rm -f "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
echo "== run"
# shellcheck disable=SC2086
$ENGINE run -d --name "$NAME" $RUN_FLAGS "$IMAGE" >/dev/null
echo "user in container: $($ENGINE exec "$NAME" id -un)"

url="http://127.0.0.1:$PORT"
for _ in $(seq 1 90); do
  if python3 -c "import urllib.request; urllib.request.urlopen('$url/health/ready', timeout=2)" 2>/dev/null; then
    break
  fi
  sleep 1
done
python3 -c "import urllib.request; print('ready:', urllib.request.urlopen('$url/health/ready', timeout=2).read().decode())"

echo "== POST /estimate"
# Checks that the container serves the shipped model: the true MI lies in the 90 % interval and, where this
# checkout has its venv, the answer equals the same estimator run outside the container. The model's accuracy
# itself is measured by `mist evaluate` (see checkpoints/README.md), not here.
LOCAL_PY=${LOCAL_PY:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo "")}
# The check needs only the host's python3 standard library (no numpy): a clean host runs it.
python3 - "$url" "$LOCAL_PY" <<'PY'
import json, math, random, subprocess, sys, urllib.request

url, local_py = sys.argv[1], sys.argv[2]
rho, n = 0.8, 2000
rng = random.Random(0)
x = [rng.gauss(0.0, 1.0) for _ in range(n)]
y = [rho * v + math.sqrt(1 - rho**2) * rng.gauss(0.0, 1.0) for v in x]
truth = -0.5 * math.log(1 - rho**2)
body = json.dumps({"x": [[v] for v in x], "y": [[v] for v in y]}).encode()
req = urllib.request.Request(url + "/estimate", body, {"Content-Type": "application/json"})
answer = json.load(urllib.request.urlopen(req, timeout=60))
print(json.dumps({k: answer[k] for k in ("mi_nats", "interval_90", "n", "dx", "dy", "checkpoint_version")}, indent=1))
lo, hi = answer["interval_90"]
assert answer["n"] == n and answer["dx"] == answer["dy"] == 1
assert lo <= truth <= hi, f"true MI {truth:.3f} outside the 90% interval [{lo:.3f}, {hi:.3f}]"
print(f"true MI {truth:.3f} nats: inside the 90% interval [{lo:.3f}, {hi:.3f}]; median {answer['mi_nats']:.3f} "
      f"(error {answer['mi_nats'] - truth:+.3f})")
if local_py:
    code = ("import json, sys, numpy as np; from model.estimator import Estimator; d = json.load(sys.stdin); "
            "print(Estimator.load().estimate(np.array(d['x']), np.array(d['y'])).median)")
    local = float(subprocess.run([local_py, "-c", code], input=body, capture_output=True, check=True).stdout)
    assert abs(local - answer["mi_nats"]) < 1e-5, f"container {answer['mi_nats']} != local estimator {local}"
    print(f"container answer equals the local estimator on the same checkpoint ({local:.6f})")
else:
    print("no local venv: skipped the comparison with the local estimator")
PY
echo "== HEALTHCHECK"
if [[ "$ENGINE" == podman ]]; then  # podman runs health checks from systemd timers; run it once by hand
  $ENGINE healthcheck run "$NAME" && echo "HEALTHCHECK command: healthy"
else  # docker runs the HEALTHCHECK itself: wait for its verdict and fail unless healthy
  status=starting
  for _ in $(seq 1 60); do
    status=$($ENGINE inspect "$NAME" --format '{{.State.Health.Status}}')
    [[ "$status" == starting ]] || break
    sleep 2
  done
  echo "health status: $status"
  [[ "$status" == healthy ]]
fi
