# syntax=docker/dockerfile:1
# One image for every workload of the platform; the manifests (k8s/) choose the command:
#   python -m services.<wallet|points|promotions|checkout> [serve|migrate]
#   python -m gateway
#   python -m shared.jobs <job>
#   python -m loyalty_cli ...          (the operator CLI, `loyalty` when installed)
# Build: docker build -t loyalty-platform:dev .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the runtime dependencies, exactly as pinned, in a virtual environment --------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml constraints.txt ./
# The [project] dependencies only (not the dev tools), pinned by constraints.txt.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > requirements.txt \
 && pip install -c constraints.txt -r requirements.txt

# --- runtime: the virtual environment and the sources, owned by root, run as an unprivileged user
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 loyalty \
 && useradd --system --uid 10001 --gid loyalty --no-create-home --shell /usr/sbin/nologin loyalty
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY shared/ shared/
COPY services/ services/
COPY gateway/ gateway/
COPY loyalty_cli/ loyalty_cli/
COPY protos/ protos/
# Bytecode now: the root filesystem is read-only in the pod.
RUN python -m compileall -q /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/protos \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GRPC_BIND_HOST=0.0.0.0 \
    DB_AUTO_MIGRATE=false \
    LOG_FORMAT=json
USER 10001:10001
EXPOSE 50051 50052 50053 50054 8080 9464
CMD ["python", "-m", "shared.jobs", "--help"]
