# MIST MI-estimation service: CPU-only torch, non-root, the default checkpoint baked in.
#   docker build -t mist-server:0.3.0 .
#   docker run -p 8000:8000 mist-server:0.3.0
# The image for the generate/train Jobs adds the [train] extra (normflows, tqdm, matplotlib):
#   docker build --build-arg EXTRAS=train -t mist-train:0.3.0 .
# Versions are pinned by constraints.txt (uv pip compile; see README), so two builds of one commit agree.
# Build arguments: BASE_IMAGE (a Debian-based Python 3.11), TORCH_INDEX_URL (where the CPU torch wheel comes
# from; empty = the default index), PIP_FIND_LINKS (a local wheel directory, e.g. /opt/wheels), EXTRAS.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=""
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, from the CPU index: normflows does not pin torch and PyPI's default torch is a CUDA build.
RUN python3 -m venv /opt/venv \
 && PIP_FIND_LINKS="$PIP_FIND_LINKS" /opt/venv/bin/pip install --no-cache-dir \
      ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY mist/ mist/
COPY metadata_gen/ metadata_gen/
COPY model/ model/
COPY server/ server/
# The wheel carries the shipped checkpoint and configs as package data (pyproject maps them under model/assets).
COPY checkpoints/ checkpoints/
COPY configs/ configs/
RUN PIP_FIND_LINKS="$PIP_FIND_LINKS" /opt/venv/bin/pip install --no-cache-dir -c constraints.txt \
      "/src${EXTRAS:+[$EXTRAS]}" \
 && /opt/venv/bin/python -c "import torch; assert not torch.version.cuda, 'CUDA torch in a CPU image'"

FROM ${BASE_IMAGE} AS runtime
RUN useradd --uid 10001 --create-home --home-dir /home/mist mist
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY configs/ configs/
COPY checkpoints/mist-default.pt checkpoints/mist-default.cmi.json checkpoints/mist-cmi.pt checkpoints/mist-cmi.cmi.json checkpoints/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MIST_HOST=0.0.0.0 \
    MIST_PORT=8000 \
    MIST_WORKERS=1 \
    MIST_TORCH_THREADS=2 \
    MIST_CHECKPOINT=/app/checkpoints/mist-default.pt
USER 10001
EXPOSE 8000
# Slim images have no curl: probe the readiness endpoint with Python.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MIST_PORT', '8000') + '/health/ready', timeout=4)"]
CMD ["mist", "serve"]
