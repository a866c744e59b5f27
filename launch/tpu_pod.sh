#!/usr/bin/env bash
# Runs the main job on every worker of a Cloud TPU VM slice (one host or a pod).
#
# Usage: bash launch/tpu_pod.sh NAME ZONE ACCELERATOR CONFIG WORKDIR [options] [--config.KEY=VALUE ...]
#                               [-- other trainer flags]
#   NAME         the TPU VM slice; created if it does not exist, reused if it is READY
#   ZONE         e.g. us-central2-b, us-west4-a
#   ACCELERATOR  accelerator type, e.g. v4-8, v4-32, v5litepod-32 (a v5e-32: 8 hosts), v5p-8, v6e-8
#   CONFIG       config file relative to the checkout, with its optional argument:
#                configs/arithmetic_tiny.py, configs/countdown_tiny.py:smoke
#   WORKDIR      where the run writes; every worker runs the same trainer on it, so it must be a
#                path all workers share: an NFS (e.g. Filestore) mount given as an absolute path
#                the same on every worker. A relative path is refused, and so is a gs:// bucket
#                (the trainer's workdir lock and metrics need a POSIX file system).
# Options:
#   --dry-run          print every command it would run, one per line prefixed with "+ ", and
#                      run nothing (gcloud need not be installed)
#   --project=P        the Google Cloud project (default: gcloud's configured project)
#   --version=RUNTIME  TPU software version for a new slice (default by accelerator: v4 and older
#                      tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5, v6e
#                      v2-alpha-tpuv6e)
#   --spot             create the slice as Spot capacity (preemptible; rerun to resume)
#   --config.KEY=VALUE and everything after "--" go to the trainer unchanged.
#
# Steps: describe the slice (create it if missing); pack the checkout (tracked and untracked,
# not ignored files, so uncommitted edits go too) and copy it to every worker; on every worker
# make a venv (Python >= 3.11, which the pinned requirements need; through uv where the image's
# python3 is older), install requirements.txt, then jax[tpu] at the jax version pinned there, then
# the project; run `python -m insight_jax.main --config=CONFIG --workdir=WORKDIR ...` on all
# workers at once. jax.distributed finds the coordinator by itself on a TPU slice, so the trainer
# gets no coordinator flags. The terminal shows every worker's output interleaved; each worker
# writes its own log (~/insight_jax_logs/NAME/worker-I.log on the worker), and after the run
# those logs are copied to workdirs/pod_logs/NAME/worker-I.log here. Rerunning the same command
# resumes the run from its last checkpoint. The job lives as long as this ssh session: keep the
# terminal open (or run this under tmux / screen).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Remote paths are relative to the worker's home directory (where ssh commands start).
REMOTE_CODE=insight_jax
REMOTE_VENV=insight_jax_venv
TARBALL_NAME=insight_jax.tar.gz

usage() {
  sed -n '2,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
}

die_usage() {
  echo "tpu_pod.sh: $1" >&2
  echo >&2
  usage
  exit 2
}

# Quotes one word for a POSIX shell: unchanged if it is made of safe characters only, otherwise in
# single quotes (a ' inside becomes '\''). Used both for the remote command strings and for the
# dry-run listing, so what is printed can be pasted back into a shell.
shq() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# The words of a command, each quoted, space-separated.
shjoin() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(shq "$word")"
  done
  printf '%s' "$out"
}

DRY_RUN=0
PROJECT=""
RUNTIME=""
SPOT=0
POSITIONAL=()
TRAINER_FLAGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --)
      shift
      TRAINER_FLAGS+=("$@")
      break
      ;;
    --dry-run) DRY_RUN=1 ;;
    --spot) SPOT=1 ;;
    --project=*) PROJECT="${1#--project=}" ;;
    --version=*) RUNTIME="${1#--version=}" ;;
    --config.*=*) TRAINER_FLAGS+=("$1") ;;
    -h | --help)
      usage
      exit 0
      ;;
    -*) die_usage "unknown option '$1' (trainer flags other than --config.KEY=VALUE go after --)" ;;
    *) POSITIONAL+=("$1") ;;
  esac
  shift
done

if [ "${#POSITIONAL[@]}" -ne 5 ]; then
  die_usage "expected 5 arguments NAME ZONE ACCELERATOR CONFIG WORKDIR, got ${#POSITIONAL[@]}"
fi
NAME="${POSITIONAL[0]}"
ZONE="${POSITIONAL[1]}"
ACCELERATOR="${POSITIONAL[2]}"
CONFIG="${POSITIONAL[3]}"
WORKDIR="${POSITIONAL[4]}"

# TPU names follow Compute Engine resource names: lowercase letters, digits and hyphens.
if ! [[ "$NAME" =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]]; then
  die_usage "NAME '$NAME' is not a valid TPU name (lowercase letters, digits and hyphens, starting with a letter, at most 63 characters)"
fi
if ! [[ "$ZONE" =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]]; then
  die_usage "ZONE '$ZONE' is not a zone name like us-central2-b"
fi
if ! [[ "$ACCELERATOR" =~ ^v[0-9]+[a-z]*-[0-9]+$ ]]; then
  die_usage "ACCELERATOR '$ACCELERATOR' is not an accelerator type like v4-8, v5litepod-32, v5p-8 or v6e-8"
fi
CONFIG_FILE="${CONFIG%%:*}"
if [[ "$CONFIG_FILE" = /* ]]; then
  die_usage "CONFIG '$CONFIG' must be relative to the checkout (it is run from the copy on each worker)"
fi
if [ ! -f "$ROOT/$CONFIG_FILE" ]; then
  die_usage "CONFIG file '$CONFIG_FILE' does not exist in the checkout $ROOT"
fi
case "$WORKDIR" in
  /?*) ;;
  gs://*) die_usage "WORKDIR '$WORKDIR': a gs:// bucket is not supported (the workdir's lock and metrics need a POSIX file system); use an absolute path on a shared (NFS) mount" ;;
  *) die_usage "WORKDIR '$WORKDIR' must be shared by all workers: an absolute path on a shared (NFS) mount, not a relative path" ;;
esac
if [ -n "$PROJECT" ] && ! [[ "$PROJECT" =~ ^[a-z][-a-z0-9.:]*[a-z0-9]$ ]]; then
  die_usage "--project '$PROJECT' is not a project id"
fi
for flag in "${TRAINER_FLAGS[@]+"${TRAINER_FLAGS[@]}"}"; do
  case "$flag" in
    --config=* | --workdir=* | --config | --workdir)
      die_usage "'$flag': CONFIG and WORKDIR are positional arguments" ;;
    *$'\n'*) die_usage "trainer flag '$flag' holds a newline" ;;
  esac
done
if [ -z "$RUNTIME" ]; then
  case "$ACCELERATOR" in
    v5litepod-*) RUNTIME=v2-alpha-tpuv5-lite ;;
    v5p-*) RUNTIME=v2-alpha-tpuv5 ;;
    v6e-*) RUNTIME=v2-alpha-tpuv6e ;;
    v2-* | v3-* | v4-*) RUNTIME=tpu-ubuntu2204-base ;;
    *) die_usage "no default --version for ACCELERATOR '$ACCELERATOR': pass --version=RUNTIME" ;;
  esac
fi
# The jax version jax[tpu] is installed at: the one requirements.txt pins, so jax, jaxlib and
# libtpu match what the tests ran against.
JAX_VERSION="$(sed -n 's/^jax==\([^[:space:]#]*\).*/\1/p' "$ROOT/requirements.txt")"
if [ -z "$JAX_VERSION" ]; then
  echo "tpu_pod.sh: no 'jax==VERSION' line in $ROOT/requirements.txt" >&2
  exit 1
fi

if [ "$DRY_RUN" = 0 ] && ! command -v gcloud >/dev/null; then
  echo "tpu_pod.sh: gcloud is not on PATH (install the Google Cloud CLI, or use --dry-run)" >&2
  exit 1
fi

LOG_DIR="$ROOT/workdirs/pod_logs/$NAME"
REMOTE_LOGS="insight_jax_logs/$NAME"
GCLOUD_ZONE=(--zone="$ZONE")
if [ -n "$PROJECT" ]; then
  GCLOUD_ZONE+=(--project="$PROJECT")
fi
TPU=(gcloud compute tpus tpu-vm)

# Runs a command, or under --dry-run prints it.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+ %s\n' "$(shjoin "$@")"
  else
    "$@"
  fi
}

# ssh into all workers at once with one command string.
ssh_all() {
  run "${TPU[@]}" ssh "$NAME" "${GCLOUD_ZONE[@]}" --worker=all --command="$1"
}

# 1. The slice: reuse it if READY, create it if missing.
CREATE=("${TPU[@]}" create "$NAME" "${GCLOUD_ZONE[@]}" --accelerator-type="$ACCELERATOR"
  --version="$RUNTIME")
if [ "$SPOT" = 1 ]; then
  CREATE+=(--spot)
fi
DESCRIBE=("${TPU[@]}" describe "$NAME" "${GCLOUD_ZONE[@]}" --format='value(state)')
if [ "$DRY_RUN" = 1 ]; then
  run "${DESCRIBE[@]}"
  echo "# only if the slice does not exist yet:"
  run "${CREATE[@]}"
else
  if ! STATE="$("${DESCRIBE[@]}" 2>/dev/null)"; then
    "${CREATE[@]}"
    STATE="$("${DESCRIBE[@]}")"
  fi
  if [ "$STATE" != READY ]; then
    echo "tpu_pod.sh: slice $NAME is $STATE, not READY; a preempted or stopped slice has to be" \
      "deleted (${TPU[*]} delete $NAME --zone=$ZONE) and this command rerun" >&2
    exit 1
  fi
fi

# 2. The code: tracked and untracked files that git does not ignore (so .venv, workdirs/ and
# caches stay here), packed once and copied to every worker.
TARBALL="$LOG_DIR/$TARBALL_NAME"
FILE_LIST="$LOG_DIR/files.txt"
run mkdir -p "$LOG_DIR"
if [ "$DRY_RUN" = 1 ]; then
  printf '+ %s > %s\n' "$(shjoin git -C "$ROOT" ls-files -z --cached --others --exclude-standard)" \
    "$(shq "$FILE_LIST")"
else
  # A tracked file deleted in the working tree is left out (tar would stop on it).
  git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' path; do
      if [ -e "$ROOT/$path" ]; then printf '%s\0' "$path"; fi
    done >"$FILE_LIST"
fi
run tar -czf "$TARBALL" -C "$ROOT" --null -T "$FILE_LIST"
run "${TPU[@]}" scp "$TARBALL" "$NAME:$TARBALL_NAME" "${GCLOUD_ZONE[@]}" --worker=all
ssh_all "rm -rf $REMOTE_CODE && mkdir -p $REMOTE_CODE && tar -xzf $TARBALL_NAME -C $REMOTE_CODE && rm $TARBALL_NAME"

# 3. The environment on every worker. The TPU images' python3 (3.10 on Ubuntu 22.04) is older
# than the pins allow, so the venv then comes from uv, which fetches a Python >= 3.11.
PIP="$REMOTE_VENV/bin/pip"
MAKE_VENV="if python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then python3 -m venv $REMOTE_VENV; else python3 -m pip install -q --user uv && python3 -m uv venv -q --seed --python 3.11 $REMOTE_VENV; fi"
INSTALL="set -e; if [ ! -x $REMOTE_VENV/bin/python ]; then $MAKE_VENV; fi"
INSTALL+="; $PIP install -q -r $REMOTE_CODE/requirements.txt"
INSTALL+="; $PIP install -q $(shq "jax[tpu]==$JAX_VERSION")"
INSTALL+="; $PIP install -q --no-deps -e $REMOTE_CODE"
ssh_all "$INSTALL"

# 4. The job, on all workers at once. Each worker learns its index from the TPU metadata server
# (the hostname stands in if that fails) and tees its output to its own log.
TRAIN=("../$REMOTE_VENV/bin/python" -m insight_jax.main --config="$CONFIG" --workdir="$WORKDIR"
  "${TRAINER_FLAGS[@]+"${TRAINER_FLAGS[@]}"}")
METADATA=http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number
RUN_JOB="set -o pipefail; i=\$(curl -sf -H Metadata-Flavor:Google $METADATA || hostname)"
RUN_JOB+="; mkdir -p $(shq "$REMOTE_LOGS") && cd $REMOTE_CODE"
RUN_JOB+=" && PYTHONUNBUFFERED=1 $(shjoin "${TRAIN[@]}") 2>&1 | tee $(shq "../$REMOTE_LOGS")/worker-\$i.log"
STATUS=0
ssh_all "$RUN_JOB" || STATUS=$?

# 5. Every worker's log, copied here whether the job succeeded or not.
fetch_log() {
  run "${TPU[@]}" scp "$NAME:$REMOTE_LOGS/worker-$1.log" "$LOG_DIR/" "${GCLOUD_ZONE[@]}" \
    --worker="$1"
}
if [ "$DRY_RUN" = 1 ]; then
  echo "# one per worker (their number is read from describe):"
  fetch_log 0
else
  ENDPOINTS="$("${TPU[@]}" describe "$NAME" "${GCLOUD_ZONE[@]}" \
    --format='value(networkEndpoints[].ipAddress)')"
  IFS=';' read -r -a HOSTS <<<"$ENDPOINTS"
  WORKERS="${#HOSTS[@]}"
  if [ "$WORKERS" -eq 0 ]; then
    WORKERS=1  # describe listed no endpoints: worker 0 exists on every slice
  fi
  for ((w = 0; w < WORKERS; w++)); do
    fetch_log "$w" || echo "tpu_pod.sh: could not copy worker $w's log" >&2
  done
  echo "tpu_pod.sh: logs in $LOG_DIR (job exit status $STATUS)" >&2
fi
exit "$STATUS"
