# Sluice controller image. The base is a build argument so it can be a
# locally made image where no registry is reachable:
#   docker build --build-arg BASE_IMAGE=python:3.11-slim -t sluice .
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
COPY schemas ./schemas
RUN python3 -m venv /opt/sluice \
 && /opt/sluice/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/sluice/bin/pip install --no-cache-dir .

FROM ${BASE_IMAGE}
RUN (command -v git >/dev/null || (apt-get update && apt-get install -y --no-install-recommends git openssh-client \
      && rm -rf /var/lib/apt/lists/*)) \
 && (getent passwd 65532 >/dev/null || useradd --uid 65532 --user-group --home-dir /var/lib/sluice --no-create-home sluice)
COPY --from=build /opt/sluice /opt/sluice
# Everything Sluice writes goes under /var/lib/sluice and /tmp (emptyDirs):
# the root filesystem can be read-only.
ENV PATH=/opt/sluice/bin:$PATH HOME=/var/lib/sluice XDG_CACHE_HOME=/tmp/cache \
    SLUICE_WORKDIR=/var/lib/sluice/repo PYTHONDONTWRITEBYTECODE=1 GIT_CONFIG_NOSYSTEM=1
USER 65532:65532
WORKDIR /var/lib/sluice
ENTRYPOINT ["sluice"]
CMD ["--help"]
