# Ember's model server (CPU). Build from the repository root:
#   docker build -t ember-serve .                                   (base: python:3.11-slim)
#   docker build --build-arg BASE_IMAGE=my-local-python-base -t ember-serve .
# Run with a Triton-style model repository mounted at /models:
#   docker run -p 8000:8000 -p 8001:8001 -v $PWD/models:/models ember-serve
# The image holds no models and downloads none: compiled code is cached under /cache.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EMBER_CACHE_DIR=/cache VIRTUAL_ENV=/opt/ember PATH=/opt/ember/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ember ./ember
RUN python3 -m venv /opt/ember && pip install --upgrade pip setuptools && pip install '.[serve]' \
    && rm -rf /src && mkdir -p /models /cache
WORKDIR /
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD python3 -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"
STOPSIGNAL SIGTERM
ENTRYPOINT ["ember", "serve", "--host", "0.0.0.0", "--port", "8000", "--grpc-port", "8001"]
CMD ["--model-repository", "/models"]
